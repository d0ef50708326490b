"""Why long inputs are spooled through the ffmpeg command line: torchcodec cannot stream them.

    python bench/spool_decode.py [--minutes 10]

One 48 kHz stereo FLAC (sox: two sines) of --minutes, then, in wall seconds and against a whole
torchcodec decode (`losatok_input.decoder.load_audio`, 16 kHz mono, the in-memory path):
  torchcodec ranges   one AudioDecoder, consecutive one-minute `get_samples_played_in_range`
                      calls (what streaming with torchcodec 0.11 would be): the time after each,
                      and the largest sample difference of their concatenation
  ffmpeg per channel  the command line resampling both channels, averaged here
  ffmpeg -ac 1        the command line downmixing first, then scaled by MonoDecoder's stereo gain
  spool_file          `losatok_input.spool.spool_file`, what the decode stage runs (-ac 1)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from losatok_input.decoder import load_audio  # noqa: E402
from losatok_input.spool import spool_file  # noqa: E402

RATE = 16_000


def ffmpeg(path: Path, args: list[str]) -> np.ndarray:
    command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0:a:0"]
    out = subprocess.run([*command, *args, "-c:a", "pcm_f32le", "-f", "f32le", "pipe:1"], capture_output=True)
    return np.frombuffer(out.stdout, np.float32)


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=int, default=10)
    args = p.parse_args()
    from torchcodec.decoders import AudioDecoder

    with tempfile.TemporaryDirectory() as folder:
        flac = Path(folder) / "long.flac"
        seconds = 60 * args.minutes
        synth = ["sox", "-n", "-r", "48000", "-c", "2", "-b", "16", str(flac), "synth", str(seconds)]
        subprocess.run([*synth, "sine", "440", "sine", "660", "vol", "0.3"], check=True)
        load_audio(flac, RATE)  # warm-up: FFmpeg's libraries loaded
        whole, took = timed(lambda: load_audio(flac, RATE).numpy())
        print(f"{args.minutes} min 48 kHz stereo FLAC; torchcodec whole decode: {took:.2f} s")

        decoder = AudioDecoder(str(flac), sample_rate=RATE, num_channels=1)
        parts, started = [], time.perf_counter()
        for minute in range(args.minutes):
            parts.append(decoder.get_samples_played_in_range(60 * minute, 60 * (minute + 1)).data[0].numpy())
            print(f"  torchcodec ranges: minute {minute + 1} done at {time.perf_counter() - started:.2f} s")
        joined = np.concatenate(parts)
        n = min(len(joined), len(whole))
        print(f"torchcodec ranges: max |difference| {np.abs(joined[:n] - whole[:n]).max():.3g}")

        rows = [
            ("ffmpeg per channel", lambda: ffmpeg(flac, ["-af", f"aresample={RATE}"]).reshape(-1, 2).mean(1)),
            ("ffmpeg -ac 1", lambda: ffmpeg(flac, ["-ac", "1", "-ar", str(RATE)]) * np.float32(0.5**0.5)),
        ]
        for name, run in rows:
            samples, took = timed(run)
            same = len(samples) == len(whole)
            diff = np.abs(samples - whole).max() if same else float("nan")
            print(f"{name}: {took:.2f} s, {len(samples)} samples, max |difference| {diff:.3g}")
        wave, took = timed(lambda: spool_file(str(flac), RATE))
        with wave:
            diff = np.abs(wave[:] - whole).max() if len(wave) == len(whole) else float("nan")
        print(f"spool_file: {took:.2f} s, max |difference| {diff:.3g}")


if __name__ == "__main__":
    main()
