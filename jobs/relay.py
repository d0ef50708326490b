"""What the workers of a multi-worker run show on the driver: their log lines, progress
included, and their results; and progress that reads well off a terminal.

Ray Train's workers do not log to the driver, and their result never reached it; a run of
many workers should read on the console and in `ray job logs` as a run of one does.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

progress_log = logging.getLogger("jobs.progress")


class WorkerRelay:
    """Log lines and results from Ray Train workers to the driver, through a Ray queue.

    Ray Train's workers do not log to the driver (and `log_to_driver` would bring every Ray
    process's chatter along); this carries only our loggers' records: rank 0 from INFO, other
    ranks from WARNING. The driver logs each under its own logger name, as a single-worker run
    would have, while `fit()` runs.
    """

    LOGGERS = ("jobs", "losatok", "losatok_data", "losatok_storage", "losatok_input")

    def __init__(self) -> None:
        from ray.util.queue import Queue

        self.queue = Queue(actor_options={"num_cpus": 0})  # must not take a CPU the workers need
        self.collected: dict[int, dict[str, Any]] = {}

    def forwarder(self) -> _Forwarder:
        return _Forwarder(self.queue)

    @contextlib.contextmanager
    def pumping(self, every: float = 0.5) -> Iterator[None]:
        stop = threading.Event()

        def pump() -> None:
            while not stop.is_set():
                self._drain(wait=every)
            self._drain(wait=None)

        thread = threading.Thread(target=pump, name="ray-train-relay", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.queue.shutdown()

    def _drain(self, wait: float | None) -> None:
        from ray.util.queue import Empty

        try:
            items = [self.queue.get(timeout=wait)] if wait else []
            items += self.queue.get_nowait_batch(self.queue.qsize())
        except Empty:
            return
        for kind, rank, *rest in items:
            if kind == "result":
                self.collected[rank] = rest[0]
            else:
                logger_name, level, message = rest
                logging.getLogger(logger_name).log(
                    level, message if rank == 0 else f"[rank {rank}] {message}"
                )

    def results(self, num_workers: int) -> list[dict[str, Any]]:
        missing = sorted(set(range(num_workers)) - set(self.collected))
        if missing:
            raise RuntimeError(f"Ray Train finished without a result from rank(s) {missing}")
        return [self.collected[r] for r in range(num_workers)]


class _Forwarder(logging.Handler):
    """The worker side of WorkerRelay: a logging handler plus the final result."""

    def __init__(self, queue: Any) -> None:
        super().__init__()
        self.queue, self.rank = queue, 0

    def __getstate__(self) -> dict[str, Any]:  # handlers hold a lock, which does not pickle
        return {"queue": self.queue}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["queue"])

    @contextlib.contextmanager
    def installed(self, rank: int) -> Iterator[None]:
        self.rank = rank
        self.setLevel(logging.INFO if rank == 0 else logging.WARNING)
        loggers = [logging.getLogger(n) for n in WorkerRelay.LOGGERS]
        levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.addHandler(self)
            lg.setLevel(min(lg.getEffectiveLevel(), self.level))
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.removeHandler(self)
                lg.setLevel(level)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(("log", self.rank, record.name, record.levelno, record.getMessage()))
        except Exception:  # noqa: BLE001 - a lost log line must not stop training
            self.handleError(record)

    def result(self, rank: int, result: dict[str, Any]) -> None:
        self.queue.put_nowait(("result", rank, result))


class LineProgress:
    """tqdm's `update` / `set_postfix` / `close`, as one log line per `set_postfix` (each log
    interval): what a log file, `ray job logs` or a Ray worker can show, where a bar cannot."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool) -> None:
        self.total, self.n, self.desc, self.enabled = total, initial, desc, enabled
        self.started, self.first = time.perf_counter(), initial

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        if not self.enabled:
            return
        rate = (self.n - self.first) / max(time.perf_counter() - self.started, 1e-9)
        shown = " ".join(f"{k}={v}" for k, v in values.items())
        progress_log.info("%s %d/%d steps | %s | %.2f steps/s", self.desc, self.n, self.total, shown, rate)

    def close(self) -> None:
        pass


def progress_bar(total: int, initial: int, enabled: bool, desc: str = "train") -> Any:
    """A tqdm bar on a terminal; elsewhere (a file, a Ray worker) a LineProgress."""
    if enabled and sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, mininterval=1.0, desc=desc, unit="step")
    return LineProgress(total, initial, desc, enabled)
