"""Reliability: tokenize a corpus on S3 while the connection to the store fails, and check what survived.

    PYTHONPATH=. python bench/storage_faults.py [--files 24] [--up 2.0] [--down 3.0]

A loopback S3 server (moto) holds the corpus and the dataset; every request of the run goes
through `losatok_storage.testing.FaultProxy`. In one process, one local Ray:
  clean      no fault: the baseline time
  flapping   the connection is cut for `--down` s every `--up + --down` s for the whole run
             (outages shorter than the retry budget: the run must ride them out)
  outage     the connection is cut for good once two shards are committed (longer than the
             budget: the run must stop with one line), restored, and the command rerun
After each, `verify` (checksums) must pass with no fault and no warning, the card's totals must
equal the index's, and every input must be in the dataset exactly once. Prints one table row
per scenario: wall time (ratio to clean), outages, connections refused, driver retries logged,
and the verdict.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402
import s3fs  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

from losatok_data.reader import open_dataset  # noqa: E402
from losatok_data.verify import verify_dataset  # noqa: E402
from losatok_input.sources import input_key  # noqa: E402
from losatok_input.testing import synth_music, synth_speech  # noqa: E402
from losatok_storage.testing import FaultProxy  # noqa: E402
from pipelines.run import StorageOutageError, tokenize  # noqa: E402
from pipelines.testing import tiny_run  # noqa: E402

CREDENTIALS = {"key": "bench", "secret": "bench"}
RETRIES = {"retries": 8, "retry_base_seconds": 0.25, "retry_max_seconds": 2.0}  # ~10 s budget


class Counter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "retrying in" in record.getMessage()


def corpus(root: Path, files: int) -> list[Path]:
    root.mkdir(parents=True)
    made = []
    for i in range(files):
        if i % 2:
            made.append(synth_music(root / f"music_{i:03d}.flac", seconds=3 + i % 5, sample_rate=22_050))
        else:
            made.append(synth_speech(root / f"speech_{i:03d}.wav", f"utterance {i}", sample_rate=16_000))
    return made


def check(url: str, options: dict, locations: list[str]) -> str:
    report = verify_dataset(url, options)
    dataset = open_dataset(url, options)
    keys = dataset.index().column("key").to_pylist()
    expected = {f"{input_key(loc)}_0000" for loc in locations}
    problems = []
    if not report.ok or report.warnings:
        problems.append(f"verify: {len(report.faults)} faults, {len(report.warnings)} warnings")
    if len(keys) != len(set(keys)):
        problems.append("a sample twice")
    if set(keys) != expected:
        problems.append(f"{len(expected - set(keys))} inputs missing")
    if dataset.card.totals.samples != len(keys):
        problems.append("card != index")
    return "; ".join(problems) or "verify clean, card = index, every input once"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--up", type=float, default=2.0)
    parser.add_argument("--down", type=float, default=3.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    retries = Counter()
    logging.getLogger("losatok_storage.retry").addHandler(retries)
    logging.getLogger("losatok_storage.retry").setLevel(logging.WARNING)

    work = Path(tempfile.mkdtemp(prefix="faults-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        direct = {**CREDENTIALS, "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"}}
        fs = s3fs.S3FileSystem(**direct, skip_instance_cache=True)
        fs.mkdir("bench")
        files = corpus(work / "corpus", args.files)
        for path in files:
            fs.put(str(path), f"bench/corpus/{path.name}")
        locations = [f"s3://bench/corpus/{p.name}" for p in files]
        rows = []
        with FaultProxy("127.0.0.1", port) as proxy:
            faulty = {
                **CREDENTIALS,
                "client_kwargs": {"endpoint_url": proxy.url},
                "config_kwargs": {"connect_timeout": 2, "read_timeout": 10, "retries": {"max_attempts": 1}},
            }

            def config(name: str):
                return tiny_run(
                    "s3://bench/corpus",
                    f"s3://bench/{name}",
                    inputs_per_shard=2,
                    storage_options=faulty,
                    **RETRIES,
                )

            def scenario(name: str, body) -> float:
                refused, retries.count = proxy.connections_refused, 0
                started = time.perf_counter()
                outages, note = body(config(name))
                wall = time.perf_counter() - started
                verdict = check(f"s3://bench/{name}", direct, locations)
                rows.append(
                    (name, wall, outages, proxy.connections_refused - refused, retries.count, note, verdict)
                )
                return wall

            def clean(cfg):
                tokenize(cfg)
                return 0, ""

            def flapping(cfg):
                stop, count = threading.Event(), [0]

                def flap() -> None:
                    while not stop.wait(args.up):
                        proxy.cut()
                        count[0] += 1
                        stop.wait(args.down)
                        proxy.restore()

                thread = threading.Thread(target=flap, daemon=True)
                thread.start()
                try:
                    tokenize(cfg)
                finally:
                    stop.set()
                    thread.join()
                    proxy.restore()
                return count[0], f"{args.down:.0f} s down every {args.up + args.down:.0f} s"

            def outage(cfg):
                root = cfg.sink.path.removeprefix("s3://")

                def cut_after_two() -> None:
                    while True:
                        fs.invalidate_cache()
                        if fs.exists(f"{root}/index") and len(fs.ls(f"{root}/index")) >= 2:
                            proxy.cut()
                            return
                        time.sleep(0.05)

                thread = threading.Thread(target=cut_after_two, daemon=True)
                thread.start()
                try:
                    tokenize(cfg)
                    note = "the run did not stop"
                except StorageOutageError as err:
                    note = f"stopped: {str(err)[:60]}...; rerun"
                thread.join()
                proxy.restore()
                fs.invalidate_cache()
                fs.rm(f"{root}/lease.json")  # the stopped run's lease (this process lives on)
                tokenize(cfg)
                return 1, note

            base = scenario("clean", clean)
            scenario("flapping", flapping)
            scenario("outage", outage)
        print(
            f"{args.files} files ({sum(p.stat().st_size for p in files) / 2**20:.1f} MiB) on loopback S3 via a fault proxy"
        )
        print(
            "| scenario | wall s | vs clean | outages | connections refused | retries logged (driver) | what happened | after |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, wall, outages, refused, logged, note, verdict in rows:
            print(
                f"| {name} | {wall:.1f} | {wall / base:.2f}x | {outages} | {refused} | {logged} | {note or '-'} | {verdict} |"
            )
    finally:
        ray.shutdown()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
