"""What the per-segment audio measures and the pause search cost, against the decode stage.

    python bench/quality_cost.py [--files 300] [--long 3] [--long-minutes 10] [--rounds 5] [--no-vad]

One thread throughout. Part 1, per call (best of several repeats), on real audio (sox music
and espeak-ng speech mixed, as bench/vs_loop.py makes it) at 16 kHz:
  measure()   `pipelines.measures.measure` on 1, 2.5 and 30 s as int16 PCM, as float32 off
              the int16 grid (what a resampled input gives) and as float32 on it (int16 audio
              passed as float: the whole of it checked, then measured as int16)
  hashes      the content hash alone with each candidate, over int16 and float32 bytes
  pyloudnorm  BS.1770 integrated loudness, and silero-vad's speech timestamps (JIT, and ONNX
              where onnxruntime is installed): only when installed, neither is a dependency
Part 2, the decode stage body (`decode_stage`, as bench/stage_costs.py runs it: a local Ray of
one CPU, units read from a plan partition) on three corpora:
  wav16   --files 16 kHz mono 16-bit wav of 1 to 4 s (the cheapest decode: read from the bytes)
  flac44  --files 44.1 kHz stereo FLAC of 1 to 4 s (FFmpeg decodes, downmixes, resamples)
  long    --long 16 kHz mono wav of about --long-minutes min each (cut into 30 s segments)
Each corpus is decoded --rounds times in turns: "bare" (`pipelines.decode.measure` stubbed
out, equal cuts) and "as wired" (the tree as it is). Then `measure()` (and pyloudnorm) is
timed on the very segments the decode gave, and `pipelines.segment.pause_bounds` (max 30 s)
on each long input's audio. Every time is the least over the rounds; fractions are of the
bare decode. "wired - bare" is the in-place cost, a check on the direct timings.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import os
import shutil
import sys
import tempfile
import time
import timeit
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fsspec  # noqa: E402
import numpy as np  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
import xxhash  # noqa: E402
from vs_loop import RATE, make_corpus, source_audio  # noqa: E402

import pipelines.decode as decode_module  # noqa: E402
from losatok_input.sources import list_inputs  # noqa: E402
from losatok_input.testing import convert, synth_music, synth_speech  # noqa: E402
from pipelines.config import ModelConfig, SinkConfig, SourceConfig, TokenizeConfig  # noqa: E402
from pipelines.dataflow import decode_arguments, decode_stage  # noqa: E402
from pipelines.measures import AudioMeasures, integrated_loudness, measure  # noqa: E402
from pipelines.plan import make_units, write_partition  # noqa: E402
from pipelines.records import Segment, unpack_payload  # noqa: E402

LENGTHS = (1.0, 2.5, 30.0)  # seconds per call in part 1
MAX_SECONDS = 30.0  # pause_bounds' max segment length: the pipeline's default


def per_call(call: Callable[[], object], repeats: int = 5) -> float:
    """Seconds per call: the least of `repeats` timings of a batch lasting ~0.2 s or more."""
    timer = timeit.Timer(call)
    number, _ = timer.autorange()  # a batch of >= 0.2 s
    return min(timer.repeat(repeats, number)) / number


def optional(module: str):
    try:
        return __import__(module)
    except ImportError:
        return None


# --- part 1: per call ---


def per_call_costs(work: Path, vad: bool) -> None:
    audio = source_audio(work, 60.0)  # (S,) float32, real audio on the int16 grid (x 0.99)
    pcm = np.round(audio * 32767).astype(np.int16)
    off_grid = (pcm * np.float32(0.7 / 32768)).astype(np.float32)  # a gain: no longer k / 32768
    on_grid = pcm.astype(np.float32) / np.float32(32768)
    print("## measure(), per call (one thread)\n")
    print("| audio | int16 | float32 off the int16 grid | float32 on it |")
    print("| --- | --- | --- | --- |")
    for seconds in LENGTHS:
        n = int(seconds * RATE)
        cells = [f"{1e6 * per_call(lambda w=w[:n]: measure(w)):.0f} µs" for w in (pcm, off_grid, on_grid)]
        print(f"| {seconds:g} s | " + " | ".join(cells) + " |")

    print("\n## The content hash alone (digest of the sample bytes)\n")
    hashes: dict[str, Callable[[memoryview], object]] = {
        "xxh3_128 (xxhash; chosen)": xxhash.xxh3_128_digest,
        "sha1": lambda b: hashlib.sha1(b).digest(),
        "sha256": lambda b: hashlib.sha256(b).digest(),
        "blake2b-128": lambda b: hashlib.blake2b(b, digest_size=16).digest(),
        "md5": lambda b: hashlib.md5(b).digest(),
    }
    print("| hash | 2.5 s int16 | 2.5 s float32 | 30 s int16 | 30 s float32 | GB/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, digest in hashes.items():
        cells, rate = [], 0.0
        for seconds in (2.5, 30.0):
            for wav in (pcm, off_grid):
                data = memoryview(np.ascontiguousarray(wav[: int(seconds * RATE)])).cast("B")
                cost = per_call(lambda d=data, h=digest: h(d))
                cells.append(f"{1e6 * cost:.0f} µs")
                rate = data.nbytes / cost / 1e9
        print(f"| {name} | " + " | ".join(cells) + f" | {rate:.2f} |")

    print("\n## Candidates not in measure() by default (one thread)\n")
    print("| what | " + " | ".join(f"{s:g} s" for s in LENGTHS) + " |")
    print("| --- | " + " | ".join("---" for _ in LENGTHS) + " |")
    if optional("pyloudnorm") is None:
        print("| pyloudnorm: not installed (pip install pyloudnorm) |" + " |" * len(LENGTHS))
    else:
        cells = [
            f"{1e6 * per_call(lambda s=s: integrated_loudness(pcm[: int(s * RATE)], RATE)):.0f} µs"
            for s in LENGTHS
        ]
        print("| pyloudnorm integrated loudness | " + " | ".join(cells) + " |")
    silero = optional("silero_vad") if vad else None
    if silero is None:
        print(
            f"| silero-vad: {'not installed (pip install silero-vad)' if vad else 'skipped (--no-vad)'} |"
            + " |" * len(LENGTHS)
        )
        return
    models = {"jit": silero.load_silero_vad()}
    if optional("onnxruntime") is not None:
        models["onnx"] = silero.load_silero_vad(onnx=True)
    for name, model in models.items():
        cells = []
        for seconds in LENGTHS:
            wav = torch.from_numpy(off_grid[: int(seconds * RATE)])

            def vad_call(w=wav, m=model):
                return silero.get_speech_timestamps(w, m, sampling_rate=RATE)

            vad_call()  # warm-up
            cost = min(timeit.repeat(vad_call, number=1, repeat=3))
            cells.append(f"{1e3 * cost:.1f} ms")
        print(f"| silero-vad get_speech_timestamps ({name}) | " + " | ".join(cells) + " |")


# --- part 2: in the decode stage ---


def read_wav(path: Path) -> np.ndarray:
    """A 16-bit wav as (S, channels) int16."""
    with wave.open(str(path)) as f:
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype=np.int16)
        return pcm.reshape(-1, f.getnchannels())


def make_flac_corpus(root: Path, count: int, low: float, high: float, rng: np.random.Generator) -> float:
    """`count` 44.1 kHz stereo FLAC files of `low` to `high` s, cut from real speech and music at
    random places and gains; returns their audio seconds."""
    rate = 44_100
    root.mkdir(parents=True)
    words = "Each file is decoded, mixed down and resampled before it is measured. " * 8
    speech = read_wav(synth_speech(root / "_speech.wav", words, sample_rate=rate))  # (S, 1)
    # sox's plucks die away within ~10 s: 8 s of them, repeated, so that no clip is silence
    music = read_wav(synth_music(root / "_music.wav", seconds=8.0, sample_rate=rate, channels=2))  # (S, 2)
    audio = np.concatenate([speech * np.array([[1.0, 0.8]]), *[music] * 8]).astype(np.float32)  # (S, 2)
    lengths = rng.uniform(low, high, count)
    for i, seconds in enumerate(lengths):
        n = int(seconds * rate)
        start = int(rng.integers(0, len(audio) - n))
        clip = (audio[start : start + n] * rng.uniform(0.3, 0.9)).astype("<i2")  # (n, 2)
        with wave.open(str(root / "_clip.wav"), "wb") as out:
            out.setnchannels(2)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes(clip.tobytes())
        convert(root / "_clip.wav", root / f"clip_{i:05d}.flac")
    for path in root.glob("_*"):
        path.unlink()
    return float(sum(int(s * rate) for s in lengths) / rate)


@contextlib.contextmanager
def measures_stubbed() -> Iterator[None]:
    """The decode stage without measure(): `pipelines.decode.measure` answers a constant."""
    if not hasattr(decode_module, "measure"):
        yield
        return
    real = decode_module.measure
    stub = AudioMeasures(0.0, 0.0, 0.0, 0.0, "")
    decode_module.measure = lambda wav, sample_rate=RATE, **_: stub
    try:
        yield
    finally:
        decode_module.measure = real


def decode_costs(work: Path, name: str, corpus: Path, rounds: int, pause_bounds) -> dict[str, float]:
    """Decode `corpus` bare and as wired, in turns; then time measure(), pyloudnorm and
    pause_bounds on what it gave. Returns seconds (least over the rounds) and counts."""
    config = TokenizeConfig(
        source=SourceConfig(path=str(corpus)),
        sink=SinkConfig(path=str(work / f"ds-{name}")),
        model=ModelConfig(preset="tiny"),
    )
    segment = config.segment
    fields = {f.name for f in dataclasses.fields(segment)}
    bare_segment = dataclasses.replace(segment, cut="equal") if "cut" in fields else segment
    units = make_units(list_inputs(config.source), 64, 1 << 40)
    plan = str(work / f"plan-{name}.parquet")
    write_partition(fsspec.filesystem("file"), plan, units)
    wired_args = decode_arguments(config, RATE)
    bare_args = {**wired_args, "segment": bare_segment}

    def decode_all(args):
        return [out for u in units for out in decode_stage({"unit": [u.index], "plan": [plan]}, **args)]

    decode_all(wired_args)  # warm-up: file cache, imports
    bare, wired = [], []
    payloads = None
    for _ in range(rounds):
        with measures_stubbed():
            started = time.perf_counter()
            payloads = decode_all(bare_args)
            bare.append(time.perf_counter() - started)
        started = time.perf_counter()
        decode_all(wired_args)
        wired.append(time.perf_counter() - started)
    segments: list[Segment] = [
        s for out in payloads for blob in out["payload"] for s in unpack_payload(blob)[3]
    ]

    def timed(call: Callable[[], object]) -> float:
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return min(times)

    costs = {
        "inputs": len({s.input_key for s in segments}),
        "segments": len(segments),
        "audio": sum(s.duration for s in segments),
        "pcm": sum(s.wav.dtype == np.int16 for s in segments),
        "bare": min(bare),
        "wired": min(wired),
        "measure": timed(lambda: [measure(s.wav, s.sample_rate) for s in segments]),
    }
    if optional("pyloudnorm") is not None:
        costs["pyloudnorm"] = timed(lambda: [integrated_loudness(s.wav, s.sample_rate) for s in segments])
    if pause_bounds is not None and name == "long":
        inputs: dict[str, list[np.ndarray]] = {}
        for s in segments:  # equal cuts, nothing left out: the segments tile each input
            inputs.setdefault(s.input_key, []).append(s.wav)
        whole = [np.concatenate(parts) for parts in inputs.values()]
        min_seconds = segment.min_seconds
        costs["pause_bounds"] = timed(
            lambda: [pause_bounds(w, RATE, MAX_SECONDS, min_seconds) for w in whole]
        )
    return costs


def share(costs: dict[str, float], key: str) -> str:
    """A cost's ms per input file and its fraction of the bare decode."""
    if key not in costs:
        return "n/a"
    return f"{1e3 * costs[key] / costs['inputs']:.3f} ms ({100 * costs[key] / costs['bare']:.1f} %)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=300, help="files in each short-file corpus")
    p.add_argument("--long", type=int, default=3, help="files in the long corpus")
    p.add_argument("--long-minutes", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--no-vad", dest="vad", action="store_false", help="skip silero-vad (slow)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="losatok-quality-cost-"))
    try:
        per_call_costs(work, args.vad)
        try:
            from pipelines.segment import pause_bounds
        except ImportError:
            pause_bounds = None
            print("\npause_bounds not available yet")
        rng = np.random.default_rng(0)
        started = time.perf_counter()
        corpora = {
            "wav16": make_corpus(work / "wav16", args.files, 1.0, 4.0, rng),
            "flac44": make_flac_corpus(work / "flac44", args.files, 1.0, 4.0, rng),
            "long": make_corpus(
                work / "long", args.long, 54 * args.long_minutes, 66 * args.long_minutes, rng
            ),
        }
        print(f"\n(corpora made in {time.perf_counter() - started:.0f} s)")
        # the stage body asks Ray which node it runs on: a local Ray of one CPU
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
        results = {name: decode_costs(work, name, work / name, args.rounds, pause_bounds) for name in corpora}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("\n## In the decode stage (one thread; ms per input file; % of the bare decode)\n")
    print(
        "| corpus | inputs, segments (int16) | audio | decode, bare | decode, as wired | wired - bare "
        "| measure() | pyloudnorm | pause_bounds |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, c in results.items():
        files, bare = c["inputs"], c["bare"]
        cell = functools.partial(share, c)
        extra = c["wired"] - bare
        print(
            f"| {name} | {files}, {c['segments']} ({c['pcm']}) | {c['audio']:.0f} s "
            f"| {1e3 * bare / files:.3f} ms | {1e3 * c['wired'] / files:.3f} ms "
            f"| {1e3 * extra / files:.3f} ms ({100 * extra / bare:.1f} %) "
            f"| {cell('measure')} | {cell('pyloudnorm')} | {cell('pause_bounds')} |"
        )
    if not args.keep:
        print(f"(work folder {work} deleted)")
    else:
        print(f"work folder (delete when done): {work}")


if __name__ == "__main__":
    main()
