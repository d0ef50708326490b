"""Tokenization pipeline throughput, against its own stages and a plain loop, in one run.

    python bench/pipeline_throughput.py [--files 24] [--seconds 10] [--scales 1 2 4]

Makes a corpus of real audio (espeak-ng speech and sox music, as mp3, flac and ogg at 22-48 kHz),
then measures on it, in audio seconds per wall second:
  decode alone     the decode stage as Ray tasks over every unit, nothing else
  encode alone     one SegmentEncoder over the pre-decoded segments, in this process
  single process   decode -> encode -> commit in one loop, no Ray (the baseline)
  pipeline         `tokenize` end to end on Ray (decode tasks, encode actor, commit actors)
and prints the ratios. With --scales it reruns the pipeline on 2x and 4x the corpus and
reports the peak RSS of any Ray worker process, which must stay flat as the corpus grows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray on loopback

import fsspec  # noqa: E402
import psutil  # noqa: E402
import ray  # noqa: E402

from losatok import preset  # noqa: E402
from losatok_input.sources import list_inputs  # noqa: E402
from losatok_input.testing import convert, synth_music, synth_speech  # noqa: E402
from pipelines.config import (  # noqa: E402
    ClusterConfig,
    ModelConfig,
    SegmentConfig,
    SinkConfig,
    SourceConfig,
    TokenizeConfig,
)
from pipelines.dataflow import decode_arguments, decode_stage, init_ray  # noqa: E402
from pipelines.decode import decode_items  # noqa: E402
from pipelines.encode import SegmentEncoder  # noqa: E402
from pipelines.plan import make_units, write_partition  # noqa: E402
from pipelines.records import EncodeFailure  # noqa: E402
from pipelines.run import run_identity, tokenize  # noqa: E402
from pipelines.sink import SinkDataset  # noqa: E402


def make_corpus(root: Path, files: int, seconds: float) -> None:
    root.mkdir(parents=True, exist_ok=True)
    sentence = "The pipeline decodes on every core and encodes on the accelerator, " * max(
        1, int(seconds // 5)
    )
    speech = synth_speech(root / "_speech.wav", sentence, sample_rate=22_050)
    music = synth_music(root / "_music.wav", seconds=seconds, sample_rate=44_100, channels=2)
    for i in range(files):
        source = speech if i % 2 == 0 else music
        ext = ("mp3", "flac", "ogg")[i % 3]
        convert(source, root / f"item_{i:04d}.{ext}", sample_rate=(22_050, 44_100, 48_000)[i % 3])
    speech.unlink()
    music.unlink()


def replicate(src: Path, dst: Path, times: int) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for copy in range(times):
        for path in src.iterdir():
            shutil.copy(path, dst / f"c{copy}_{path.name}")


def config_for(corpus: Path, sink: Path, per_shard: int) -> TokenizeConfig:
    return TokenizeConfig(
        source=SourceConfig(path=str(corpus)),
        sink=SinkConfig(path=str(sink), inputs_per_shard=per_shard),
        model=ModelConfig(preset="tiny", seed=0),
        segment=SegmentConfig(max_seconds=30.0),
        cluster=ClusterConfig(max_failure_fraction=0.0),
    )


class PeakWorkerMemory:
    """Samples the resident memory of Ray worker processes every 0.1 s; keeps the maximum."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for process in psutil.process_iter(["cmdline", "memory_info"]):
                cmdline = " ".join(process.info["cmdline"] or [])
                if cmdline.startswith("ray::") and process.info["memory_info"]:
                    self.peak = max(self.peak, process.info["memory_info"].rss)
            time.sleep(0.1)

    def __enter__(self) -> PeakWorkerMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=24)
    p.add_argument("--seconds", type=float, default=10.0, help="length of each recording")
    p.add_argument("--per-shard", type=int, default=2, help="inputs per shard (unit of work)")
    p.add_argument(
        "--scales", nargs="*", type=int, default=[1, 2, 4], help="corpus multiples for the memory check"
    )
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="losatok-bench-"))
    corpus = work / "corpus"
    make_corpus(corpus, args.files, args.seconds)
    config = config_for(corpus, work / "pipeline", args.per_shard)
    init_ray(config.cluster)
    model_config = preset("tiny")
    units = make_units(list_inputs(config.source), args.per_shard, 1 << 40)

    # decode alone: the same Ray tasks the pipeline runs, and nothing after them
    plan_path = str(work / "plan-part.parquet")  # units reach decode tasks as plan references
    write_partition(fsspec.filesystem("file"), plan_path, units)
    rows = [{"unit": u.index, "plan": plan_path} for u in units]
    start = time.perf_counter()
    ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        decode_stage, fn_kwargs=decode_arguments(config, 16_000), batch_size=1, num_cpus=1
    )
    for _ in ds.iter_rows():
        pass
    decode_wall = time.perf_counter() - start

    # pre-decoded segments for the encode-alone and single-process measurements
    segments = [s for u in units for s in decode_items(u.items, config.segment, 16_000, {}, 1)[0]]
    audio = sum(s.duration for s in segments)

    encoder = SegmentEncoder(config.model, config.fields, config.cluster.max_frames_per_batch)
    encoder.encode([segments[0].float_wav()])  # warm-up
    start = time.perf_counter()
    for unit in units:
        encoder.encode([s.float_wav() for s in segments if s.input_key in {i.key for i in unit.items}])
    encode_wall = time.perf_counter() - start

    # the plain loop: decode -> encode -> commit, one unit at a time, one process
    committer = SinkDataset.open(
        SinkConfig(path=str(work / "single")), config.fields, model_config, run_identity(config, model_config)
    ).committer()
    start = time.perf_counter()
    for unit in units:
        unit_segments, failures = decode_items(unit.items, config.segment, 16_000, {}, 1)
        results = encoder.encode([s.float_wav() for s in unit_segments])
        encoded = [
            (s, r) for s, r in zip(unit_segments, results, strict=True) if not isinstance(r, EncodeFailure)
        ]
        committer.commit_unit(unit, encoded, failures)
    single_wall = time.perf_counter() - start

    with PeakWorkerMemory() as memory:
        summary = tokenize(config)
    pipeline_wall = summary.wall_seconds
    assert summary.ok and abs(summary.audio_seconds - audio) < 1e-6 * audio + 1e-3

    rates = {
        "decode alone": audio / decode_wall,
        "encode alone": audio / encode_wall,
        "single process": audio / single_wall,
        "pipeline": audio / pipeline_wall,
    }
    print(
        f"corpus: {args.files} files, {audio:.0f} s of audio, {len(units)} shards; tiny model; {os.cpu_count()} CPUs"
    )
    for name, rate in rates.items():
        print(f"  {name:<16}{rate:>10.1f} audio s / wall s")
    slowest = min(rates["decode alone"], rates["encode alone"])
    print(
        f"  pipeline / single process          = {rates['pipeline'] / rates['single process']:.2f}x  (target >= 1.5)"
    )
    print(f"  pipeline / slowest stage alone     = {rates['pipeline'] / slowest:.2f}   (target >= 0.8)")

    peaks = {1: memory.peak}
    for scale in args.scales:
        if scale == 1:
            continue
        bigger = work / f"corpus_x{scale}"
        replicate(corpus, bigger, scale)
        with PeakWorkerMemory() as memory:
            tokenize(config_for(bigger, work / f"pipeline_x{scale}", args.per_shard))
        peaks[scale] = memory.peak
    for scale, peak in sorted(peaks.items()):
        print(f"  corpus x{scale}: peak Ray worker RSS {peak / 2**20:.0f} MiB")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
