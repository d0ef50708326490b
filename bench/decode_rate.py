"""Decode rate per format on one thread, and peak decode memory for a 2-hour 48 kHz stereo file.

    python bench/decode_rate.py [--seconds 120] [--files 2] [--memory-hours 2]

Makes real audio (sox music at 44.1 kHz stereo, espeak-ng speech at 22.05 kHz) in mp3, flac,
ogg and wav, then measures on the same files, in audio seconds per wall second, one thread:
  torchaudio             torchaudio.load + torchaudio's sinc resample (the plain baseline)
  load_audio             `losatok_input.decoder.load_audio`, the one public decode entry point (torchcodec)
  torchcodec             AudioDecoder(path, sample_rate=16000, num_channels=1).get_all_samples()
  decode_items           `pipelines.decode.decode_items` on one input: decode, checks, segments
  decode stage           the same + packing its payload (`pack_payload`), as a decode task does per core
                         (Ray's own costs are in bench/pipeline_feed.py)
Then the peak RSS of a fresh process that runs the decode stage on one 2-hour 48 kHz stereo
flac, against one that runs the torchaudio path on it.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torchaudio  # noqa: E402

from losatok_input.decoder import load_audio  # noqa: E402
from losatok_input.sources import InputItem, input_key  # noqa: E402
from losatok_input.testing import convert, synth_music, synth_speech  # noqa: E402
from pipelines.config import SegmentConfig  # noqa: E402
from pipelines.decode import decode_items  # noqa: E402
from pipelines.records import pack_payload  # noqa: E402

FORMATS = ("mp3", "flac", "ogg", "wav")


def torchaudio_before(path: str) -> torch.Tensor:
    """`load_audio` as it was: native-rate float32 of every channel, mean, then sinc resampling."""
    wav, rate = torchaudio.load(path)
    return torchaudio.functional.resample(wav.mean(0), rate, 16_000)


def torchcodec_plain(path: str) -> torch.Tensor:
    from torchcodec.decoders import AudioDecoder

    return AudioDecoder(path, sample_rate=16_000, num_channels=1).get_all_samples().data


def decode_items_only(path: str) -> list:
    segments, failures = decode_items([InputItem(input_key(path), path)], SegmentConfig(), 16_000, {}, 1)
    assert not failures
    return segments


def decode_stage(path: str) -> bytes:
    segments, failures = decode_items([InputItem(input_key(path), path)], SegmentConfig(), 16_000, {}, 1)
    assert not failures
    return pack_payload((segments, failures))


def make_corpus(root: Path, seconds: float, files: int) -> dict[str, list[Path]]:
    music = synth_music(root / "_music.wav", seconds=seconds, sample_rate=44_100, channels=2)
    words = "Decoding runs on every core so that the accelerator never waits for audio. "
    speech = synth_speech(root / "_speech.wav", words * max(1, int(seconds / 5)), sample_rate=22_050)
    corpus: dict[str, list[Path]] = {fmt: [] for fmt in FORMATS}
    for fmt in FORMATS:
        for index in range(files):
            source = music if index % 2 == 0 else speech
            corpus[fmt].append(convert(source, root / f"{index}_{source.stem[1:]}.{fmt}"))
    return corpus


def rates(methods: dict, paths: list[Path], repeats: int = 3) -> dict[str, float]:
    """Audio seconds per wall second of each method, best of `repeats` passes; the methods take
    turns within each pass, so a busy spell on the shared machine hits them alike."""
    audio = sum(load_audio(p).numel() / 16_000 for p in paths)
    best = dict.fromkeys(methods, float("inf"))
    for fn in methods.values():
        fn(str(paths[0]))  # warm-up: libraries loaded, files in the page cache
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            for path in paths:
                fn(str(path))
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: audio / seconds for name, seconds in best.items()}


def peak_memory(mode: str, path: Path) -> tuple[float, float]:
    """(RSS after imports, peak RSS) in MiB of a fresh process that decodes `path` one way."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(path)], capture_output=True, text=True, check=True
    )
    baseline, peak = done.stdout.strip().splitlines()[-1].split()
    return float(baseline), float(peak)


def child(mode: str, path: str) -> None:
    import numpy as np

    torch.set_num_threads(1)
    np.zeros(1)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if mode == "stage":
        decode_stage(path)
    else:
        torchaudio_before(path)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{baseline / 1024} {peak / 1024}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=120.0, help="length of each recording")
    p.add_argument("--files", type=int, default=2, help="recordings per format (music and speech)")
    p.add_argument("--memory-hours", type=float, default=2.0, help="0 skips the memory measurement")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child)
        return
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="losatok-decode-"))
    corpus = make_corpus(work, args.seconds, args.files)
    methods = {
        "torchaudio": torchaudio_before,
        "load_audio": load_audio,
        "torchcodec": torchcodec_plain,
        "decode_items": decode_items_only,
        "decode stage": decode_stage,
    }
    print(f"{args.files} files x {args.seconds:.0f} s per format, one thread; audio s / wall s")
    print("| format | " + " | ".join(methods) + " | stage / torchcodec |")
    print("| --- " * (len(methods) + 2) + "|")
    for fmt, paths in corpus.items():
        found = rates(methods, paths)
        cells = " | ".join(f"{r:.0f}" for r in found.values())
        print(f"| {fmt} | {cells} | {found['decode stage'] / found['torchcodec']:.2f} |", flush=True)

    if args.memory_hours:
        seconds = int(args.memory_hours * 3600)
        big = work / "long.flac"
        tone = "sine=frequency=220:sample_rate=48000:duration={0},aformat=channel_layouts=stereo"
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", tone.format(seconds), str(big)],
            check=True,
        )
        print(
            f"peak RSS decoding a {args.memory_hours:g} h 48 kHz stereo flac (16 kHz output: "
            f"{seconds * 16_000 * 4 / 2**20:.0f} MiB float32; native-rate float32: "
            f"{seconds * 48_000 * 2 * 4 / 2**20:.0f} MiB)"
        )
        for mode in ("stage", "torchaudio"):
            baseline, peak = peak_memory(mode, big)
            print(
                f"  {mode}: peak {peak:.0f} MiB, {peak - baseline:.0f} MiB above the {baseline:.0f} MiB of imports"
            )


if __name__ == "__main__":
    main()
