"""Plain waveform helpers: downmix, resample, batch, write. Decoding input audio (any format,
local or remote, spans by seeking) is `losatok_input.decoder`'s job.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
import torchaudio


def to_mono(wav: torch.Tensor) -> torch.Tensor:
    """(C, S) -> (S,) by averaging channels."""
    return wav.mean(dim=0) if wav.dim() == 2 else wav


def resample(wav: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """Band-limited (windowed sinc) resampling along the last axis; a no-op at equal rates."""
    if orig_sr == target_sr:
        return wav
    return torchaudio.functional.resample(wav, orig_sr, target_sr)


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


# Moved to losatok_input.decoder; importable from here, with a warning, for one release.
MOVED_TO_DECODER = {
    "AudioError", "MonoDecoder", "check_waveform", "decode_spans", "describe_source", "load_audio",
    "plan_runs", "probe_audio",
}  # fmt: skip


def moved_to_decoder(module: str, name: str) -> Any:
    """`name`, which `module` (`losatok` or `losatok.audio`) held, from losatok_input.decoder, with
    a DeprecationWarning naming the new path; AttributeError for any other name."""
    if name not in MOVED_TO_DECODER or (module == "losatok" and name not in ("AudioError", "load_audio")):
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    import losatok_input.decoder as decoder

    warnings.warn(
        f"{module}.{name} moved to losatok_input.decoder.{name}; the old path goes in the next release",
        DeprecationWarning,
        stacklevel=3,
    )
    return getattr(decoder, name)


def __getattr__(name: str) -> Any:
    return moved_to_decoder(__name__, name)
