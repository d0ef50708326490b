"""Real test audio made on the spot: speech from espeak-ng, music from sox, formats via ffmpeg.

Used by tests, benchmarks and the demo, so that nothing large is committed and nothing is
downloaded. Each helper raises a clear error when the Debian tool it needs is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} is not installed; run `make setup` (as root it installs ffmpeg, sox, espeak-ng)"
        )
    return path


def _run(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()}")


def synth_speech(path: str | Path, text: str, sample_rate: int = 22_050, voice: str = "en") -> Path:
    """Speak `text` with espeak-ng into a mono wav at `sample_rate` Hz."""
    path = Path(path)
    raw = path.with_suffix(".espeak.wav")
    _run([_tool("espeak-ng"), "-v", voice, "-w", str(raw), text])
    convert(raw, path, sample_rate=sample_rate)
    raw.unlink()
    return path


def synth_music(
    path: str | Path,
    seconds: float,
    sample_rate: int = 44_100,
    channels: int = 2,
    notes: tuple[str, ...] = ("C4", "E4", "G4"),
) -> Path:
    """A plucked chord with a slow tremolo from sox: tonal, non-stationary, `channels` channels."""
    path = Path(path)
    raw = path.with_suffix(".sox.wav")
    args = [_tool("sox"), "-n", "-r", str(sample_rate), "-c", str(channels), str(raw), "synth", str(seconds)]
    args += [a for note in notes for a in ("pluck", note)] + ["tremolo", "3", "40", "gain", "-6"]
    _run(args)
    convert(raw, path, sample_rate=sample_rate)
    raw.unlink()
    return path


def convert(
    src: str | Path, dst: str | Path, sample_rate: int | None = None, channels: int | None = None
) -> Path:
    """Re-encode with ffmpeg; the container and codec follow `dst`'s extension (flac, mp3, ogg, opus, m4a)."""
    dst = Path(dst)
    args = [_tool("ffmpeg"), "-loglevel", "error", "-y", "-i", str(src)]
    if sample_rate:
        args += ["-ar", str(sample_rate)]
    if channels:
        args += ["-ac", str(channels)]
    if dst.suffix == ".ogg":
        args += ["-c:a", "libvorbis"]
    args.append(str(dst))
    _run(args)
    return dst


def write_float_wav(
    path: str | Path, samples: list[float] | tuple[float, ...], sample_rate: int = 16_000
) -> Path:
    """A mono IEEE-float WAV written byte by byte, so it can hold NaN or Inf (encoders refuse to)."""
    import struct

    data = struct.pack(f"<{len(samples)}f", *samples)
    fmt = struct.pack("<HHIIHH", 3, 1, sample_rate, sample_rate * 4, 4, 32)  # format 3 = IEEE float
    body = (
        b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    )
    path = Path(path)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path
