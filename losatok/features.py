"""Mel front ends and the padding that makes batched features equal per-item features.

Both front ends use centred STFTs, which reflect-pad a lone waveform at its end. In a padded
batch an item is followed by zeros instead, so its last frames would differ from the same
item encoded alone. `pad_batch_for_stft` writes each item's own reflection after its last
sample (the rest stays zero): every frame an item has when alone is then computed from
exactly the same samples in the batch.
"""

from __future__ import annotations

import torch
import torchaudio
from torch import nn


def pad_batch_for_stft(wav: torch.Tensor, lengths: torch.Tensor, pad: int) -> torch.Tensor:
    """Append to each item the reflection a centred STFT would give it alone.

    Args:
        wav: (B, S) float waveforms, zero-padded after each item's `lengths[b]` samples.
        lengths: (B,) valid samples per item; each must exceed `pad`.
        pad: reflection length in samples (half the largest n_fft in use).

    Returns:
        (B, S + pad) waveforms: item b holds x[0:L], then x[L-2], x[L-3], ... for `pad`
        samples, then zeros.
    """
    batch, width = wav.shape
    out = torch.nn.functional.pad(wav, (0, pad))  # (B, S + pad)
    offsets = torch.arange(pad, device=wav.device)  # (pad,)
    src = (lengths[:, None] - 2 - offsets[None, :]).clamp(min=0)  # (B, pad): mirror indices
    dst = lengths[:, None] + offsets[None, :]  # (B, pad): where the mirror goes
    out.scatter_(1, dst, torch.gather(out, 1, src))
    return out


def valid_mel_frames(lengths: torch.Tensor, hop: int) -> torch.Tensor:
    """(B,) mel frames a centred STFT gives a lone item of `lengths` samples: L // hop + 1."""
    return torch.div(lengths, hop, rounding_mode="floor") + 1


def frame_mask(valid: torch.Tensor, total: int) -> torch.Tensor:
    """(B, total) bool mask, True on the first `valid[b]` positions of each row."""
    return torch.arange(total, device=valid.device)[None, :] < valid[:, None]


class PowerMelFrontEnd(nn.Sequential):
    """Power mel spectrogram of the semantic encoder (Dasheng layout: `front_end.0.*`).

    The dB conversion with `top_db` is applied by `power_to_db` so that the loudest bin is
    taken per item over its valid frames; torchaudio's AmplitudeToDB on a (B, F, T) batch
    takes one maximum over the whole batch, which would make an item's features depend on
    its batch-mates.
    """

    def __init__(self, sample_rate: int, n_fft: int, hop: int, n_mels: int, f_max: float) -> None:
        with torch.device("cpu"):  # the filterbank is computed eagerly; a meta-device build would fail
            mel = torchaudio.transforms.MelSpectrogram(
                sample_rate=sample_rate,
                n_fft=n_fft,
                win_length=n_fft,
                hop_length=hop,
                f_min=0.0,
                f_max=f_max,
                n_mels=n_mels,
                center=True,
                power=2.0,
            )
        super().__init__(mel)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, S) float32 waveform -> (B, n_mels, frames) power mel."""
        return self[0](wav)


def power_to_db(mel: torch.Tensor, valid_frames: torch.Tensor, top_db: float) -> torch.Tensor:
    """10 log10 of a power mel, floored at each item's own maximum minus `top_db`.

    Args:
        mel: (B, F, T) power mel.
        valid_frames: (B,) frames of each item that hold audio (the rest is padding).
    Returns:
        (B, F, T) dB values.
    """
    db = 10.0 * torch.log10(mel.clamp(min=1e-10))  # (B, F, T)
    valid = frame_mask(valid_frames, db.shape[-1])[:, None, :]  # (B, 1, T)
    peak = db.masked_fill(~valid, float("-inf")).amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    return torch.maximum(db, peak - top_db)


class LogMelFrontEnd(nn.Module):
    """Log-magnitude mel of the acoustic branch (published layout: `front_end.mel_spec.*`)."""

    def __init__(self, sample_rate: int, n_fft: int, hop: int, n_mels: int) -> None:
        super().__init__()
        with torch.device("cpu"):  # see PowerMelFrontEnd
            self.mel_spec = torchaudio.transforms.MelSpectrogram(
                sample_rate=sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels, center=True, power=1.0
            )

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, S) float32 waveform -> (B, n_mels, frames) log(clip(mel, 1e-7))."""
        return torch.log(self.mel_spec(wav).clamp(min=1e-7))
