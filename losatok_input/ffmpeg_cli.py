"""The `ffmpeg` command line as a decoder of last resort, for streams torchcodec decodes short
(torchcodec 0.11 returns a quarter of an IMA ADPCM wav); its memory is that of the output rate."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
from typing import BinaryIO

import torch

AudioSource = str | os.PathLike | bytes | BinaryIO


def decode_with_ffmpeg_cli(
    source: AudioSource, sample_rate: int, channels: int, start: float | None = None, end: float | None = None
) -> torch.Tensor:
    """(S,) float32 channel mean of [start, end) seconds of `source` at `sample_rate`, decoded by
    the `ffmpeg` command line (a path is opened by FFmpeg; bytes or a file object are piped to
    it). A fallback for streams torchcodec decodes short; memory is that of the output rate.

    Raises OSError when `ffmpeg` is not on the PATH, RuntimeError when it fails.
    """
    executable = shutil.which("ffmpeg")
    if executable is None:
        raise OSError("ffmpeg is not on the PATH (apt-get install ffmpeg)")
    path = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
    args = [executable, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", path or "pipe:0"]
    # trimmed by sample counts after resampling, not by timestamps (the streams this serves are
    # those whose timestamps mislead), on the grid of a full decode: round(t * rate)
    trim = f"start_sample={round((start or 0.0) * sample_rate)}"
    if end is not None:
        trim += f":end_sample={round(end * sample_rate)}"
    args += ["-map", "0:a:0", "-vn", "-af", f"aresample={sample_rate},atrim={trim}"]
    args += ["-c:a", "pcm_f32le", "-f", "f32le", "pipe:1"]
    with tempfile.TemporaryFile() as errors:  # a file: a chatty failure cannot fill a pipe and stall
        process = subprocess.Popen(
            args, stdin=None if path else subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors
        )
        feeder = None
        if path is None:
            feeder = threading.Thread(target=_feed, args=(source, process.stdin), daemon=True)
            feeder.start()
        out = process.stdout.read()
        if feeder is not None:
            feeder.join()
        if process.wait() != 0:
            errors.seek(0)
            lines = errors.read().decode(errors="replace").strip().splitlines()
            raise RuntimeError(lines[-1] if lines else f"exit status {process.returncode}")
    wav = torch.frombuffer(bytearray(out), dtype=torch.float32)  # (S * C,) interleaved
    usable = wav.numel() // max(channels, 1) * max(channels, 1)
    return wav[:usable].reshape(-1, max(channels, 1)).mean(dim=1)  # (S,)


def _feed(source: AudioSource, sink: BinaryIO) -> None:
    """Write `source` (bytes or a binary file object) to a subprocess's stdin, then close it."""
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            sink.write(source)
        else:
            source.seek(0)
            while chunk := source.read(1 << 20):
                sink.write(chunk)
    except (BrokenPipeError, ValueError):  # ffmpeg stopped reading: it has what it needs
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.close()
