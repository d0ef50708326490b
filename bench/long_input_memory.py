"""Memory of one long input through the pipeline, per length: is it bounded whatever the length?

    python bench/long_input_memory.py [OVERRIDE ...] [--hours 1 6 24] [--limit-gb GB] [--cores 2] [--keep]
        [--processes]

(OVERRIDEs, such as cluster.window_seconds=120, go to every run, before the options.)

For each length in --hours, one input: a 48 kHz stereo FLAC of a 440 Hz sine, which ffmpeg
writes straight to disk (the PCM never passes through this process). Then `losatok-tokenize
source.path=<that folder> segment.max_seconds=30 cluster.num_cpus=--cores` as a user runs it, in a
fresh process, while this process samples every 0.2 s (psutil):
  the RSS of every process of the run's tree: the CLI (the driver) and its descendants, Ray's
  included (a local Ray's gcs_server, raylet, dashboard and monitors are children of the
  driver, its workers and agents children of the raylet); each process's peak, grouped by role
  from its `ray::` title, which Ray sets to the task or actor it runs now (a worker that goes
  back to `ray::IDLE` keeps the role of its last work):
    driver   the CLI process
    decode   task workers running `MapBatches(decode_stage)` (the column: the largest of them)
    encode   the `EncodeStage` actor
    commit   `CommitStage` actors (the largest)
    ray      Ray's own processes: gcs_server, raylet, dashboard and its modules, monitors,
             agents, and Ray Data's helper actors (_StatsActor, ...) (the column: the sum of
             their peaks)
    other    the rest (the project's reaper, idle pool workers that never worked)
  the machine's used memory (total - available) above what it was just before the run, peak:
  it also counts what no RSS shows whole, such as Ray's object store in /dev/shm, and
  whatever else the machine does meanwhile; so also the run's own: the largest sum of its
  processes' PSS (each shared page split among the processes that map it) at one sample;
  the run's wall time, its exit status and the samples its summary line reports (expected:
  at least hours * 3600 / 30; a "pause" cut falls in the last third before 30 s, and on a
  steady tone anywhere there, so ~25 s on average).
RSS counts shared pages (the object store's mapped pages, shared libraries) in every process
that maps them, so the per-role figures may add up to more than the machine's. When the
machine's memory above idle passes --limit-gb (default: 80 % of the memory available at
start), the bench kills the run's whole tree itself, by pid (never `ray stop`: other Ray
instances may run here), and reports "stopped at N GB" rather than letting the machine swap
or meet the OOM killer. --processes prints each process's peak after the table.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from process_roles import role_of  # bench/: this script's folder

ROOT = Path(__file__).resolve().parents[1]
GB = 1e9
RATE = 16_000  # the pipeline's audio rate: what the input decodes to
SEGMENT_SECONDS = 30


def make_input(folder: Path, hours: float) -> Path:
    """`hours` of a 48 kHz stereo 440 Hz sine as FLAC in `folder`, written by ffmpeg alone."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SystemExit(
            "ffmpeg is not installed; run `make setup` (as root it installs ffmpeg, sox, espeak-ng)"
        )
    folder.mkdir(parents=True)
    path = folder / f"tone_{hours:g}h.flac"
    tone = f"sine=frequency=440:sample_rate=48000:duration={hours * 3600:.0f}"
    subprocess.run(
        [ffmpeg, "-loglevel", "error", "-y", "-f", "lavfi", "-i", tone, "-ac", "2", str(path)], check=True
    )
    return path


@dataclass
class Watched:
    """One run, as sampled: peaks in bytes, per (pid, role)."""

    returncode: int | None = None
    wall: float = 0.0
    machine_peak: float = 0.0  # bytes above idle
    tree_peak: float = 0.0  # bytes: the largest sum of the tree's PSS at one sample
    stopped_at: float | None = None  # bytes above idle when the bench killed the run
    stopped: int = 0  # processes of the run the bench killed then
    leftovers: int = 0  # processes of the run still alive after it ended, killed by the bench
    peaks: dict[tuple[int, str], int] = field(default_factory=dict)
    titles: dict[int, str] = field(default_factory=dict)
    session: str | None = None  # the run's Ray session (session_<date>_<driver pid>)

    def settle(self) -> None:
        """Give a process's peak as "other" (sampled while it started: a worker before its title,
        a daemon between fork and exec) to the one role it had later, where it had one."""
        for pid in {pid for pid, _ in self.peaks}:
            roles = [r for p, r in self.peaks if p == pid and r != "other"]
            if len(roles) == 1 and (pid, "other") in self.peaks:
                start = self.peaks.pop((pid, "other"))
                self.peaks[pid, roles[0]] = max(self.peaks[pid, roles[0]], start)

    def role_peak(self, role: str, how=max) -> float:
        values = [rss for (_, r), rss in self.peaks.items() if r == role]
        return how(values) if values else 0.0


def running(process: psutil.Process) -> bool:
    """Still the same process (pid and start time), and not a zombie."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_all(processes: dict[int, psutil.Process], session: str | None) -> int:
    """SIGKILL every process of the run still alive, and whatever they started meanwhile, and any
    process naming this run's Ray session; returns how many were killed. By pid and start time
    only (psutil refuses a reused pid), so other Ray instances on the machine are left alone."""
    killed = 0
    for _ in range(5):  # the raylet may start a worker between a look and the kill
        found = dict(processes)
        for process in list(found.values()):
            with contextlib.suppress(psutil.Error):
                found.update({c.pid: c for c in process.children(recursive=True)})
        if session:
            for process in psutil.process_iter(["cmdline"]):
                if session in " ".join(process.info["cmdline"] or []):
                    found.setdefault(process.pid, process)
        alive = [p for p in found.values() if p.pid != os.getpid() and running(p)]
        if not alive:
            break
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
                killed += 1
        psutil.wait_procs(alive, timeout=5)
        processes.update(found)
    return killed


def used() -> int:
    memory = psutil.virtual_memory()
    return memory.total - memory.available


def watch(command: list[str], env: dict[str, str], log: Path, limit: float, every: float = 0.2) -> Watched:
    """Run `command`, sampling its process tree's RSS and the machine's memory every `every` s;
    kill the tree when the machine's memory above idle passes `limit` bytes."""
    before = []
    for _ in range(5):
        before.append(used())
        time.sleep(0.1)
    idle = sum(before) / len(before)
    result = Watched()
    processes: dict[int, psutil.Process] = {}
    started = time.perf_counter()
    with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
        run = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        driver = psutil.Process(run.pid)
        try:
            sample_until_done(run, driver, result, processes, limit, idle, every)
        except BaseException:  # Ctrl-C or a bug here: the run must not outlive the bench
            kill_all(processes, result.session)
            raise
        result.returncode = run.wait()
        result.wall = time.perf_counter() - started
    result.settle()
    if result.stopped_at is None:  # the run ended on its own: Ray's shutdown and the reaper go first
        psutil.wait_procs([p for p in processes.values() if running(p)], timeout=15)
        result.leftovers = kill_all(processes, result.session)
    return result


def sample_until_done(
    run: subprocess.Popen,
    driver: psutil.Process,
    result: Watched,
    processes: dict[int, psutil.Process],
    limit: float,
    idle: float,
    every: float,
) -> None:
    """Sample every `every` s until the run ends, or kill it past `limit` bytes above `idle`."""
    roles: dict[int, str] = {}  # each pid's last role: an idle worker keeps it
    for sample in itertools.count():
        if run.poll() is not None:
            break
        try:
            tree = [driver, *driver.children(recursive=True)]
        except psutil.Error:
            tree = []
        pss = 0
        # PSS once a second: reading it walks the page tables (~4 ms per GB of RSS here)
        with_pss = sample % round(1 / every) == 0
        for process in tree:
            try:
                title = " ".join(process.cmdline()).strip()
                if with_pss:
                    memory = process.memory_full_info()
                    rss, pss = memory.rss, pss + memory.pss
                else:
                    rss = process.memory_info().rss
            except psutil.Error:
                continue
            if not title:
                continue  # exiting (a zombie has no command line)
            processes.setdefault(process.pid, process)
            role = role_of(process, title, run.pid, roles) or roles.get(process.pid, "other")
            roles[process.pid] = role
            if not title.startswith("ray::IDLE") or process.pid not in result.titles:
                result.titles[process.pid] = title[:60]  # what it worked as, not its idle title
            key = (process.pid, role)
            result.peaks[key] = max(result.peaks.get(key, 0), rss)
            if result.session is None and "gcs_server" in title:  # its --log_dir names the session
                found = re.search(r"(session_[\d_-]+)", title)
                result.session = found.group(1) if found else None
        result.tree_peak = max(result.tree_peak, pss)
        above = used() - idle
        result.machine_peak = max(result.machine_peak, above)
        if above > limit:
            result.stopped_at = above
            result.stopped = kill_all(processes, result.session)
            return
        time.sleep(every)


def describe(result: Watched, stdout: str) -> str:
    if result.stopped_at is not None:
        return f"stopped at {result.stopped_at / GB:.1f} GB ({result.stopped} processes killed)"
    found = re.search(r"(\d+) new samples", stdout)
    samples = f", {found.group(1)} samples" if found else ", no summary line"
    left = f", {result.leftovers} processes left behind" if result.leftovers else ""
    if result.returncode == 0:
        return f"ok{samples}{left}"
    if result.returncode < 0:
        return f"killed (signal {-result.returncode}){left}"
    return f"failed (exit {result.returncode}){samples}{left}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hours", type=float, nargs="+", default=[1, 6, 24], help="one input of each length")
    p.add_argument("--limit-gb", type=float, help="machine memory above idle at which the run is killed")
    p.add_argument("--cores", type=int, default=2, help="cluster.num_cpus")
    p.add_argument("--keep", action="store_true", help="keep the work folder (inputs, datasets, logs)")
    p.add_argument("--processes", action="store_true", help="print each process's peak RSS after the table")
    p.add_argument(
        "overrides", nargs="*", help="more losatok-tokenize overrides, e.g. cluster.window_seconds=120"
    )
    args = p.parse_args()
    limit = (args.limit_gb * GB) if args.limit_gb else 0.8 * psutil.virtual_memory().available
    work = Path(tempfile.mkdtemp(prefix="losatok-long-input-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    cli = str(Path(sys.executable).with_name("losatok-tokenize"))
    print(
        f"{args.cores} cores, {psutil.virtual_memory().total / GB:.0f} GB; tiny tokenizer on CPU; one 48 kHz "
        f"stereo FLAC per row; run killed above {limit / GB:.1f} GB of machine memory over idle; "
        f"load average {os.getloadavg()[0]:.1f}" + (f"; {' '.join(args.overrides)}" if args.overrides else "")
    )
    print(
        "| hours | FLAC MB | 16 kHz float32 GB | wall s | machine above idle GB | run's PSS GB | encode actor GB "
        "| decode worker GB (max) | commit actor GB (max) | driver GB | Ray's own GB (sum) | result |"
    )
    print("| --- " * 12 + "|")
    details = []
    try:
        for hours in args.hours:
            folder = work / f"{hours:g}h"
            flac = make_input(folder / "source", hours)
            command = [
                cli,
                f"source.path={flac.parent}",
                f"sink.path={folder / 'dataset'}",
                f"segment.max_seconds={SEGMENT_SECONDS}",
                f"cluster.num_cpus={args.cores}",
                *args.overrides,
            ]
            result = watch(command, env, folder / "run", limit)
            stdout = (folder / "run.out").read_text()
            status = describe(result, stdout)
            if status.startswith("ok"):  # a pause cut falls in the last third before 30 s
                status += f" (expected >= {hours * 3600 / SEGMENT_SECONDS:.0f})"
            cells = [
                result.role_peak("encode"),
                result.role_peak("decode"),
                result.role_peak("commit"),
                result.role_peak("driver"),
                result.role_peak("ray", sum),
            ]
            print(
                f"| {hours:g} | {flac.stat().st_size / 1e6:.0f} | {hours * 3600 * RATE * 4 / GB:.2f} "
                f"| {result.wall:.0f} | {result.machine_peak / GB:.2f} | {result.tree_peak / GB:.2f} | "
                + " | ".join(f"{c / GB:.2f}" for c in cells)
                + f" | {status} |",
                flush=True,
            )
            if status.startswith(("failed", "killed")):
                print(f"  stderr tail: {(folder / 'run.err').read_text()[-1500:]}", file=sys.stderr)
            details.append((hours, result))
            if not args.keep:
                shutil.rmtree(folder)
    finally:
        if args.processes:
            for hours, result in details:
                print(f"\n{hours:g} h: peak RSS per process (GB)")
                for (pid, role), rss in sorted(result.peaks.items(), key=lambda kv: -kv[1]):
                    print(f"  {rss / GB:6.2f}  {role:7s} {pid:>7d}  {result.titles.get(pid, '')}")
        if args.keep:
            print(f"work folder: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
