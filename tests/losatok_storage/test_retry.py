"""Storage errors are classified by kind, and transient ones are retried within a budget."""

from __future__ import annotations

import errno
import random

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from losatok_storage.retry import RetryPolicy, TransientStorageError, call, is_transient


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )


def wrapped(inner: BaseException) -> OSError:
    """What s3fs raises: an OSError translated from the botocore error, which is its cause."""
    try:
        raise inner
    except BaseException as cause:
        try:
            raise OSError(errno.EIO, str(cause)) from cause
        except OSError as outer:
            return outer


@pytest.mark.parametrize(
    "error",
    [
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        wrapped(EndpointConnectionError(endpoint_url="http://127.0.0.1:1")),
        client_error("SlowDown", 503),
        client_error("InternalError", 500),
        wrapped(client_error("ServiceUnavailable", 503)),
        client_error("Whatever", 502),
        ConnectionResetError(errno.ECONNRESET, "reset by peer"),
        OSError(errno.ETIMEDOUT, "timed out"),
        TimeoutError("read timed out"),
    ],
)
def test_transient_errors(error):
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        FileNotFoundError("s3://b/missing.flac"),
        PermissionError("denied"),
        wrapped(client_error("NoSuchKey", 404)),
        client_error("AccessDenied", 403),
        ValueError("not audio"),
        OSError(errno.EIO, "corrupt stream"),
    ],
)
def test_permanent_errors(error):
    assert not is_transient(error)


def test_call_retries_transient_errors_then_succeeds(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    outcomes = [EndpointConnectionError(endpoint_url="x"), client_error("SlowDown", 503), "done"]

    def action():
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    assert call(action, "read s3://b/a.flac", RetryPolicy(attempts=5)) == ("done", 3)


def test_call_raises_permanent_errors_at_once_and_outages_past_the_budget(monkeypatch):
    sleeps = []
    monkeypatch.setattr("time.sleep", sleeps.append)
    tries = []

    def missing():
        tries.append(1)
        raise FileNotFoundError("s3://b/x")

    with pytest.raises(FileNotFoundError) as raised:
        call(missing, "read", RetryPolicy(attempts=5))
    assert len(tries) == 1 and raised.value.attempts == 1 and not sleeps

    def outage():
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    with pytest.raises(TransientStorageError, match="still failing after 4 attempts"):
        call(
            outage,
            "write s3://b/index/shard-000001.parquet",
            RetryPolicy(attempts=4, base_delay=1, max_delay=3),
        )
    assert len(sleeps) == 3 and all(0.5 <= s <= 3 for s in sleeps)


def test_backoff_is_bounded_exponential_with_jitter():
    policy = RetryPolicy(attempts=8, base_delay=0.5, max_delay=20.0, jitter=0.5)
    delays = list(policy.delays(random.Random(0)))
    assert len(delays) == 7
    ceilings = [min(20.0, 0.5 * 2**i) for i in range(7)]
    assert all(c * 0.5 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert 30 <= sum(ceilings) <= 70  # the default budget waits out about a minute
