"""Joining a running Ray cluster, with one-line errors for the two ways that commonly fails.

`ray.init(address=...)` on its own answers a missing cluster with a traceback, and a driver
whose token authentication differs from the cluster's either retries for a while and fails
with "Failed to connect", or (a driver with a token, a cluster without) connects and then
loses every actor it starts ("actors died during initialization"). Here the address is
resolved first, its port tried, the cluster's GCS asked once whether it accepts this driver,
and after joining, the dashboard asked for the cluster's authentication mode (a token driver
on a cluster without a dashboard starts one probe actor instead).

Both `pipelines` and `jobs` join clusters through `connect`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import ray

log = logging.getLogger(__name__)

START_HINT = (
    "start one with `ray start --head` (on a single machine add --node-ip-address=127.0.0.2; "
    "see docs/cluster.md), or drop `{flag}` to run on a Ray of this machine alone"
)
AUTH_HINT = "https://docs.ray.io/en/latest/ray-security/token-auth.html"


class ClusterError(RuntimeError):
    """The Ray cluster to join is not there, or refuses this driver; the message is one line."""


def auth_mode() -> str:
    """This process's Ray authentication mode: "token" or "disabled" (RAY_AUTH_MODE, or a token file)."""
    try:
        from ray._private.authentication.authentication_utils import get_authentication_mode_name
        from ray._raylet import get_authentication_mode

        return get_authentication_mode_name(get_authentication_mode())
    except ImportError:  # a Ray without token authentication
        return os.environ.get("RAY_AUTH_MODE", "disabled") or "disabled"


def resolve(address: str, flag: str) -> str:
    """host:port of the cluster `address` names ("auto": RAY_ADDRESS or the one on this machine)."""
    from ray._private.services import canonicalize_bootstrap_address

    try:
        resolved = canonicalize_bootstrap_address(address)
    except ConnectionError:
        raise ClusterError(f"no Ray cluster is running for {flag}: {START_HINT.format(flag=flag)}") from None
    if resolved is None:
        raise ClusterError(f"{flag} names no cluster; give host:port or auto")
    return resolved


def _adopt_local_token() -> None:
    """What `ray.init(address="auto")` does itself: with RAY_AUTH_MODE unset and a token on this
    machine (~/.ray/auth_token), use token authentication. Done first here so the probe below asks
    the cluster with the same credentials that ray.init will present."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _port_open(host_port: str, timeout: float = 3.0) -> bool:
    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null for the duration (C++ writes there, not to sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _gcs_refuses_this_driver(host_port: str) -> str | None:
    """The GCS's authentication complaint about this driver, or None when it answers (or cannot be asked)."""
    try:
        from ray._raylet import GcsClient
        from ray.exceptions import AuthenticationError
    except ImportError:
        return None
    try:
        with _stderr_silenced():  # Ray's C++ client logs the refusal itself; the caller says it better
            GcsClient(address=host_port).internal_kv_get(b"session_name", b"session", timeout=10)
    except AuthenticationError as err:
        return str(err).split(".")[0]
    except Exception:  # noqa: BLE001 - any other answer is for ray.init to report
        return None
    return None


def _cluster_auth_mode(dashboard_url: str | None) -> str | None:
    """The cluster's authentication mode as its dashboard reports it (None: no dashboard, or an older Ray)."""
    if not dashboard_url:
        return None
    url = dashboard_url if "://" in dashboard_url else f"http://{dashboard_url}"
    try:
        with urllib.request.urlopen(f"{url}/api/authentication_mode", timeout=5) as reply:
            return json.loads(reply.read())["authentication_mode"]
    except Exception:  # noqa: BLE001 - the check is a diagnosis, not a requirement
        return None


@ray.remote(num_cpus=0)
class _Probe:
    def ping(self) -> bool:
        return True


def _an_actor_starts(timeout: float = 120.0) -> bool:
    """Whether an actor of this driver comes up: one of a token driver on a cluster without tokens
    dies at once (its worker cannot call back into the driver). A slow start counts as a start."""
    try:
        probe = _Probe.remote()
        ray.get(probe.ping.remote(), timeout=timeout)
        ray.kill(probe)
    except ray.exceptions.RayActorError:
        return False
    except ray.exceptions.GetTimeoutError:
        pass
    return True


def mismatch_message(driver: str, cluster: str, address: str) -> str:
    if cluster == "token":
        fix = (
            "give this driver the cluster's token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) "
            "and RAY_AUTH_MODE=token"
        )
    else:
        fix = "set RAY_AUTH_MODE=disabled for this driver, or restart the cluster with RAY_AUTH_MODE=token"
    return (
        f"Ray at {address} uses authentication mode {cluster!r}, this driver {driver!r}: {fix} ({AUTH_HINT})"
    )


def connect(address: str, flag: str, **init_args: Any) -> None:
    """`ray.init` joining the cluster at `address` ("auto" or host:port); `flag` names the setting in
    errors (e.g. "cluster=auto"). Raises ClusterError with one line when it cannot join."""
    host_port = resolve(address, flag)
    if not _port_open(host_port):
        raise ClusterError(f"nothing answers at {host_port} ({flag}): {START_HINT.format(flag=flag)}")
    if address == "auto":
        _adopt_local_token()
    driver = auth_mode()
    complaint = _gcs_refuses_this_driver(host_port)
    if complaint is not None and driver == "token":
        raise ClusterError(
            f"Ray at {host_port} refuses this driver's token ({complaint}): give it the cluster's token "
            f"(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token; {AUTH_HINT})"
        )
    if complaint is not None:
        raise ClusterError(mismatch_message(driver, "token", host_port))
    init_args.setdefault("logging_level", logging.WARNING)  # "joined Ray at ..." below says it in one line
    try:
        context = ray.init(address="auto" if address == "auto" else host_port, **init_args)
    except ConnectionError as err:
        raise ClusterError(f"cannot join Ray at {host_port} ({flag}): {err}") from None
    # a driver with a token joins a cluster without one, and then every actor it starts dies
    cluster = _cluster_auth_mode(getattr(context, "dashboard_url", None))
    if cluster is None and driver == "token" and not _an_actor_starts():  # no dashboard to ask
        cluster = "disabled"
    if cluster is not None and cluster != driver:
        ray.shutdown()
        raise ClusterError(mismatch_message(driver, cluster, host_port))
    log.info("joined Ray at %s", host_port)


def join_or_start(address: str | None, flag: str, **init_args: Any) -> None:
    """Join the cluster at `address` ("auto" or host:port; `flag` names the setting in errors), or
    with no address start a Ray of this machine: a new one even when `ray start` left one
    running, watched by the reaper so that even a kill during start-up leaves no Ray process.
    Nothing happens when this process is already connected. Ray's console noise is kept to
    what a user can act on, before and after. Raises ClusterError (one line) when it cannot join.
    """
    from raycluster.console import quiet_ray_loggers
    from raycluster.reaper import watch_this_process

    quiet_ray_loggers()
    if not ray.is_initialized():
        init_args.setdefault("log_to_driver", False)
        init_args.setdefault("logging_level", logging.WARNING)
        if address:
            connect(address, flag, **init_args)
        else:
            watch_this_process()
            ray.init(address="local", **init_args)
    quiet_ray_loggers()
