"""Leave no Ray process behind when the driver of a local cluster dies, even by SIGKILL.

Ray ties its head processes to the driver that started them, but the raylet's agents
(`DashboardAgent`, `RuntimeEnvAgent`) outlive a SIGKILLed driver. A SIGKILL cannot be caught,
so a small watcher process does the cleanup: it holds the read end of a pipe whose write end
only the driver has, notes the driver's descendants every second, and when the pipe reports
end-of-file (the driver is gone, however it died) it terminates every noted descendant that
still runs, then kills what ignores the request.

    python -m raycluster.reaper DRIVER_PID FD   # started by `watch_this_process`, never by hand
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time

_pipe_write_end: int | None = None  # kept open for the driver's lifetime; closing it wakes the reaper


def watch_this_process() -> None:
    """Start the reaper for this process (once); it outlives us by design."""
    global _pipe_write_end
    if _pipe_write_end is not None:
        return
    read_end, write_end = os.pipe()
    subprocess.Popen(
        [sys.executable, "-m", "raycluster.reaper", str(os.getpid()), str(read_end)],
        pass_fds=(read_end,),
        start_new_session=True,  # a signal to the driver's process group does not reach it
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(read_end)
    _pipe_write_end = write_end  # not inheritable: children of ours do not hold the pipe open


def reap(driver_pid: int, fd: int, poll_seconds: float = 1.0, grace_seconds: float = 3.0) -> list[int]:
    """Wait for the driver to go, then end its remaining descendants; returns their pids."""
    import psutil

    me = os.getpid()
    seen: dict[int, float] = {}  # pid -> create time (a pid can be reused by another process)
    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return []
    while True:
        note_descendants(driver, seen, exclude=me)
        readable, _, _ = select.select([fd], [], [], poll_seconds)
        if readable and not os.read(fd, 1):
            break  # end of file: the driver is gone
    time.sleep(grace_seconds)  # Ray's own shutdown (and fate sharing) goes first
    left = survivors(seen)
    for process in left:  # and whatever they started since the last look
        note_descendants(process, seen, exclude=me)
    left = survivors(seen)
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(left, timeout=grace_seconds)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    return [p.pid for p in left]


def survivors(seen: dict[int, float]) -> list:
    """The processes of `seen` that still run (the same process: same pid and start time)."""
    import psutil

    alive = []
    for pid, created in seen.items():
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            if process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
    return alive


def note_descendants(root, seen: dict[int, float], exclude: int) -> None:
    """Add every live descendant of `root` to `seen`; a process that ends meanwhile is skipped.

    One pass over /proc per call (psutil's recursive `children`): a walk asking each process for
    its children reads all of /proc once per process, ~3 CPU-s per minute beside a local Ray.
    """
    import psutil

    try:
        descendants = root.children(recursive=True)
    except psutil.Error:  # gone, a zombie, or not ours to inspect
        return
    for child in descendants:
        with contextlib.suppress(psutil.Error):
            if child.pid != exclude:
                seen[child.pid] = child.create_time()


if __name__ == "__main__":
    ended = reap(int(sys.argv[1]), int(sys.argv[2]))
    if os.environ.get("LOSATOK_REAPER_LOG"):  # tests read what was ended
        with open(os.environ["LOSATOK_REAPER_LOG"], "a") as log:
            log.write(f"driver {sys.argv[1]} gone; ended {ended}\n")
