"""What a run prints: our own lines, and of Ray's only what a user can act on.

A clean run must print no error-level line and no warning the user cannot act on. Ray prints
several of both on every run:
- Ray Data's actor pool passes object-store references to its actors' constructors, and Ray's
  C++ core then logs, at error level and straight to this process's stderr, that such an actor
  "has constructor arguments in the object store and max_restarts > 0". We rely on those
  restarts (a dead encode actor is replaced and its unit retried), so the line is expected.
- "Token authentication is enabled for this Ray cluster" on every local start (we keep token
  authentication on; the cluster listens on loopback only), "Progress bars disabled" (we
  disable them: our own progress line says more), and Ray's start-up and "execution finished"
  info lines.
Python loggers are quietened by name; the C++ line is dropped by a filter on file descriptor 2
that passes every other byte through unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator

# Ray's Python loggers and the level below which their records are dropped
QUIET_LOGGERS = {
    "ray": logging.WARNING,  # start-up info ("Started a local Ray instance ...")
    "ray._private.authentication.authentication_token_setup": logging.ERROR,
    "ray.data._internal.progress": logging.ERROR,  # "Progress bars disabled"
    "ray.data._internal.execution.streaming_executor": logging.WARNING,  # "execution finished"
    # "An exception was raised from a task ...": the driver raises that error itself, with the
    # task's traceback (or, for a storage outage, says it in one line)
    "ray.data._internal.execution.streaming_executor_state": logging.CRITICAL,
}
# lines Ray's C++ core writes to stderr that are expected in every healthy run
BENIGN_STDERR = (b"has constructor arguments in the object store and max_restarts > 0",)


def quiet_ray_loggers() -> None:
    """Raise the levels of Ray's chatty loggers (call after `ray.init`, which resets them)."""
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def drop_benign_stderr(patterns: tuple[bytes, ...] = BENIGN_STDERR) -> Iterator[None]:
    """Within the block, lines written to fd 2 that contain one of `patterns` are dropped.

    Only this process's own writes pass through the filter: processes it starts inside the
    block would inherit the pipe, so start Ray before entering it.
    """
    try:
        sys.stderr.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
    except (OSError, ValueError):  # no real fd 2 (e.g. captured by a test harness)
        yield
        return
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as source:
            pending = b""
            while chunk := source.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not any(p in line for p in patterns):
                        os.write(original, line + b"\n")
            if pending:
                os.write(original, pending)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end: the pump drains and stops
        thread.join(timeout=5)
        os.close(original)
