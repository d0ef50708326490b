"""Which part of a tokenization run a process is, from its command line or its `ray::` title:
the roles `bench/long_input_memory.py` (memory) and `bench/vs_loop.py --cpu` (CPU time) count by.

    driver   the CLI process
    decode   task workers running `MapBatches(decode_stage)`
    encode   the `EncodeStage` actor
    commit   `CommitStage` actors
    ray      Ray's own processes: gcs_server, raylet, dashboard and its modules, monitors,
             agents, and Ray Data's helper actors (_StatsActor, ...)
    other    the rest (the project's reaper, pool workers that never worked)
"""

from __future__ import annotations

import contextlib

import psutil

RAY_PATHS = ("/ray/dashboard/", "/ray/autoscaler/", "/ray/_private/", "ray.dashboard")
RAY_TITLES = (
    "DashboardAgent",
    "RuntimeEnvAgent",
    "_StatsActor",
    "_AutoscalingCoordinatorActor",
    "ActorLocationTracker",
)  # Ray's and Ray Data's own actors and agents


def role_of(process: psutil.Process, title: str, driver_pid: int, parent_roles: dict[int, str]) -> str | None:
    """The role `title` (the process's command line, or its `ray::` title) says; None for a Ray
    worker starting up or idle, which keeps whatever role it had."""
    if process.pid == driver_pid:
        return "driver"
    # (the raylet's own command line names default_worker.py too, in its worker command)
    if any(arg.endswith("default_worker.py") for arg in title.split()[1:3]) or title.startswith("ray::IDLE"):
        return None  # a Ray worker starting up (before it sets its title) or waiting for work
    if title.startswith("ray::"):
        if "decode" in title.lower():
            return "decode"
        if "EncodeStage" in title:
            return "encode"
        if "CommitStage" in title:
            return "commit"
        return "ray" if any(name in title for name in RAY_TITLES) else "other"
    with contextlib.suppress(psutil.Error):
        if process.name() in ("gcs_server", "raylet") or any(p in title for p in RAY_PATHS):
            return "ray"
        if title.startswith("ray-dashboard-") or parent_roles.get(process.ppid()) == "ray":
            return "ray"  # the dashboard's module processes and its forkserver's helpers
    return "other"
