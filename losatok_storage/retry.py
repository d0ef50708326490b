"""Transient storage errors, told apart by kind, and retried with bounded backoff and jitter.

Object stores drop connections, throttle and answer 5xx for seconds to minutes; a corpus-scale
run must wait that out rather than record a good input as failed. The Python base class says
little here (botocore's `EndpointConnectionError` is no `OSError`; s3fs turns a 503 into a
plain `OSError`), so an error is classified by the names of its classes, its error code, its
HTTP status and its errno, along the whole chain of causes. Everything else (a missing key, a
permission error, a corrupt file) is permanent and raised at once.
"""

from __future__ import annotations

import errno
import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

from losatok_storage.secrets import redact_text

log = logging.getLogger(__name__)
T = TypeVar("T")

# exception class names (anywhere in the MRO) that mean "the connection or the service hiccupped"
TRANSIENT_CLASSES = {
    # botocore
    "EndpointConnectionError",
    "ConnectionClosedError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ProxyConnectionError",
    "HTTPClientError",
    "IncompleteReadError",
    "ResponseStreamingError",
    # aiohttp / asyncio / fsspec
    "ClientConnectionError",
    "ClientConnectorError",
    "ServerDisconnectedError",
    "ServerTimeoutError",
    "ClientPayloadError",
    "ClientOSError",
    "FSTimeoutError",
    "TimeoutError",
    # the standard library
    "ConnectionError",
    "ConnectionResetError",
    "ConnectionRefusedError",
    "ConnectionAbortedError",
    "BrokenPipeError",
    "IncompleteRead",
    "RemoteDisconnected",
}
# service error codes that mean "slow down" or "try again"
TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequests",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "503",
    "500",
    "502",
    "504",
}
TRANSIENT_ERRNOS = {
    errno.ECONNRESET,
    errno.ECONNREFUSED,
    errno.ECONNABORTED,
    errno.ETIMEDOUT,
    errno.EPIPE,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ENETDOWN,
    errno.EAGAIN,
}
# permanent no matter what else the chain says: the input itself is wrong
PERMANENT_CLASSES = {
    "FileNotFoundError",
    "PermissionError",
    "IsADirectoryError",
    "NotADirectoryError",
    "NoSuchKey",
    "NoSuchBucket",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "NoCredentialsError",
}
_TRANSIENT_TEXT = ("slow down", "reduce your request rate", "service unavailable", "connection reset")


def causes(error: BaseException) -> Iterator[BaseException]:
    """`error` and the errors it was raised from or during, without cycles."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_transient(error: BaseException) -> bool:
    """Whether retrying the same storage call later may succeed."""
    chain = list(causes(error))
    names = {cls.__name__ for e in chain for cls in type(e).__mro__}
    if names & PERMANENT_CLASSES:
        return False
    for e in chain:
        if {cls.__name__ for cls in type(e).__mro__} & TRANSIENT_CLASSES:
            return True
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            code = str((response.get("Error") or {}).get("Code", ""))
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if code in TRANSIENT_CODES or (isinstance(status, int) and (status == 429 or status >= 500)):
                return True
        status = getattr(e, "status", None) or getattr(e, "status_code", None)
        if isinstance(status, int) and (status == 429 or 500 <= status < 600):
            return True
        if isinstance(e, OSError) and e.errno in TRANSIENT_ERRNOS:
            return True
        if any(text in str(e).lower() for text in _TRANSIENT_TEXT):
            return True
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """How long a storage call may keep failing transiently before the run gives up on it."""

    attempts: int = 8  # tries in all; with the defaults the waits add up to about 60 s
    base_delay: float = 0.5  # seconds before the second try; doubles each time
    max_delay: float = 20.0  # no single wait is longer
    jitter: float = 0.5  # each wait is scaled by a random factor in [1 - jitter, 1]
    # a call that neither completes nor fails within stall_seconds (plus its bytes at
    # min_bytes_per_second) is abandoned and counts as a transient failure: HTTP clients time
    # out a silent read, but not every stalled write or wait for a pooled connection
    stall_seconds: float = 120.0
    min_bytes_per_second: float = float(1 << 20)

    def deadline(self, nbytes: int = 0) -> float:
        """Seconds a storage call that moves `nbytes` may take before it is abandoned."""
        return self.stall_seconds + nbytes / self.min_bytes_per_second

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The waits between attempts (attempts - 1 of them)."""
        rng = rng or random.Random()
        for attempt in range(self.attempts - 1):
            delay = min(self.max_delay, self.base_delay * 2**attempt)
            yield delay * (1 - self.jitter * rng.random())


class TransientStorageError(RuntimeError):
    """A storage call kept failing transiently past its retry budget (an outage)."""

    def __init__(self, what: str, attempts: int, last: BaseException | None = None) -> None:
        message = (
            what
            if last is None
            else f"{what}: still failing after {attempts} attempts: {type(last).__name__}: {last}"
        )
        super().__init__(message)
        self.attempts = attempts
        self.last = last

    def __reduce__(self) -> tuple:
        # crosses process boundaries (Ray tasks) as its message: the last error may not pickle
        return (type(self), (str(self), self.attempts))


def outage_in(error: BaseException) -> TransientStorageError | None:
    """The TransientStorageError `error` is, or was raised from, also in a Ray task: a task's error
    reaches the driver without its chain of causes (Ray Data wraps it in a UserCodeException),
    but with the task's traceback in its text, which names the outage on a line of its own."""
    marker = f"{TransientStorageError.__module__}.{TransientStorageError.__qualname__}: "
    for e in causes(error):
        if isinstance(e, TransientStorageError):
            return e
        cause = getattr(e, "cause", None)  # ray.exceptions.RayTaskError keeps the task's error here
        if isinstance(cause, BaseException) and cause is not e:
            found = outage_in(cause)
            if found is not None:
                return found
        for line in str(e).splitlines():
            if line.startswith(marker):
                return TransientStorageError(line[len(marker) :].strip(), 0)
    return None


def call(action: Callable[[], T], what: str, policy: RetryPolicy = RetryPolicy()) -> tuple[T, int]:
    """Run `action`, retrying transient errors per `policy`; returns (value, attempts).

    A permanent error is raised at once (with `.attempts` set); transient errors past the
    budget raise TransientStorageError, which says the input was not at fault.
    """
    waits = policy.delays()
    attempt = 0
    while True:
        attempt += 1
        try:
            return action(), attempt
        except Exception as error:
            if not is_transient(error):
                error.attempts = attempt  # type: ignore[attr-defined]
                raise
            back_off(waits, error, what, attempt, policy, "retrying")


def iter_resuming(
    open_stream: Callable[[], AbstractContextManager[Any]],
    items_of: Callable[[Any], Iterator[T]],
    what: str,
    policy: RetryPolicy = RetryPolicy(),
) -> Iterator[T]:
    """The items `items_of(stream)` yields, riding out transient errors of a long read.

    A stream cut part-way (a dropped connection, a throttled read) is opened again and read
    from its start, skipping the items already yielded (the stream must yield the same items in
    the same order each time), with the backoff of `call`. A permanent error is raised at once;
    past the budget, TransientStorageError.
    """
    done = 0
    waits = policy.delays()
    attempt = 0
    while True:
        attempt += 1
        try:
            with open_stream() as stream:
                for index, item in enumerate(items_of(stream)):
                    if index < done:
                        continue
                    done += 1
                    yield item
            return
        except Exception as error:
            if not is_transient(error):
                raise
            back_off(waits, error, what, attempt, policy, f"{done} items read; reopening")


def back_off(
    waits: Iterator[float], error: Exception, what: str, attempt: int, policy: RetryPolicy, then: str
) -> None:
    """Wait the next of `waits` after a transient `error` (logged with its count), or raise
    TransientStorageError when they are spent."""
    delay = next(waits, None)
    if delay is None:
        raise TransientStorageError(what, attempt, error) from error
    log.warning(
        "%s: transient %s (%s), attempt %d of %d; %s in %.1f s",
        what,
        type(error).__name__,
        redact_text(str(error))[:200],  # a URL may carry a token
        attempt,
        policy.attempts,
        then,
        delay,
    )
    time.sleep(delay)


Retries = int | RetryPolicy  # attempts (with the default backoff), or a whole policy


def policy_of(retries: Retries, base_delay: float = 0.5) -> RetryPolicy:
    return (
        retries if isinstance(retries, RetryPolicy) else RetryPolicy(attempts=retries, base_delay=base_delay)
    )


def with_retries(action: Callable[[], T], retries: Retries, base_delay: float = 0.5) -> tuple[T, int]:
    """Run `action`, retrying transient storage errors (classified by kind: `is_transient`) with
    bounded exponential backoff and jitter; returns (value, attempts). A permanent error is
    raised at once; an outage past the attempts raises TransientStorageError."""
    return call(action, "storage read", policy_of(retries, base_delay))
