"""Audio I/O: decode any common format, downmix, resample to the model rate, and batch.

Decoding goes through `torchaudio.load` (TorchCodec and FFmpeg underneath), so wav, flac, mp3,
ogg/vorbis, opus and m4a/aac all read the same way. Every failure is an `AudioError` that
names the file and the problem; nothing is ever replaced by silence.
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO

import torch
import torchaudio

AudioSource = str | os.PathLike | bytes | BinaryIO


class AudioError(ValueError):
    """An input that cannot become a waveform; `source` names it, `reason` says why."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def describe_source(source: AudioSource, name: str | None = None) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return getattr(source, "name", None) or f"<{type(source).__name__} audio>"


def check_waveform(wav: torch.Tensor, source: str) -> torch.Tensor:
    """Refuse an empty waveform or one holding NaN/Inf; returns `wav` unchanged."""
    if wav.numel() == 0:
        raise AudioError(source, "no audio samples (empty or zero-length stream)")
    if not bool(torch.isfinite(wav).all()):
        bad = int((~torch.isfinite(wav)).sum())
        raise AudioError(source, f"{bad} samples are NaN or infinite")
    return wav


def to_mono(wav: torch.Tensor) -> torch.Tensor:
    """(C, S) -> (S,) by averaging channels."""
    return wav.mean(dim=0) if wav.dim() == 2 else wav


def resample(wav: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """Band-limited (windowed sinc) resampling along the last axis; a no-op at equal rates."""
    if orig_sr == target_sr:
        return wav
    return torchaudio.functional.resample(wav, orig_sr, target_sr)


def load_audio(
    source: AudioSource,
    sample_rate: int = 16_000,
    start: float | None = None,
    end: float | None = None,
    name: str | None = None,
) -> torch.Tensor:
    """Decode `source` (path, bytes or binary file object) to a mono float32 waveform.

    Args:
        sample_rate: output rate in Hz (16 000 for the published model).
        start, end: optional span in seconds of the source to keep.
        name: how errors name the source (e.g. its s3:// URI when `source` is bytes).
    Returns:
        (S,) float32 waveform at `sample_rate`.
    Raises:
        AudioError naming the source: unreadable, not audio, empty, NaN/Inf, or an empty span.
    """
    label = describe_source(source, name)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise AudioError(label, "empty file (0 bytes)")
        source = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        if not os.path.exists(source):
            raise AudioError(label, "file does not exist")
        if os.path.getsize(source) == 0:
            raise AudioError(label, "empty file (0 bytes)")
    try:
        wav, orig_sr = torchaudio.load(source)  # (C, S) float32 in [-1, 1]
    except Exception as err:  # FFmpeg's messages vary by container; keep its words
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise AudioError(label, f"cannot decode as audio ({reason})") from err
    wav = check_waveform(wav, label)
    if start is not None or end is not None:
        first = round((start or 0.0) * orig_sr)
        last = wav.shape[-1] if end is None else round(end * orig_sr)
        wav = wav[..., first:last]
        if wav.shape[-1] == 0:
            raise AudioError(label, f"span {start}-{end} s holds no samples")
    return resample(to_mono(wav), orig_sr, sample_rate).contiguous()


def probe_audio(source: str | os.PathLike | BinaryIO) -> str | None:
    """None if FFmpeg opens `source` (a path or a seekable binary file) and finds an audio
    stream in it, else a short reason ("not a format FFmpeg opens", "no audio stream").

    Reads the header only (FFmpeg's probe: about 100-400 kB), not the whole file; it decides
    what counts as audio for files whose extension does not (schemas.audio_shards).
    """
    from torchcodec.decoders import AudioDecoder  # torchaudio's own decoder, imported late

    try:
        AudioDecoder(source)
    except Exception as err:  # FFmpeg's errors carry no type: sort them by their words
        return "no audio stream" if "audio stream" in str(err) else "not a format FFmpeg opens"
    return None


def save_audio(path: str | os.PathLike, wav: torch.Tensor, sample_rate: int = 16_000) -> None:
    """Write a (S,) or (1, S) waveform, clipped to [-1, 1]; the format follows the extension."""
    wav = wav.detach().float().cpu().reshape(1, -1).clamp(-1.0, 1.0)
    torchaudio.save(os.fspath(path), wav, sample_rate)


def collate_waveforms(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad (S_i,) waveforms into a batch: returns (B, max S_i) waveforms and (B,) lengths."""
    if not waves:
        raise ValueError("cannot batch an empty list of waveforms")
    lengths = torch.tensor([w.shape[-1] for w in waves], dtype=torch.long)
    batch = torch.zeros(len(waves), int(lengths.max()), dtype=torch.float32)
    for row, wave in zip(batch, waves, strict=True):
        row[: wave.shape[-1]] = wave
    return batch, lengths
