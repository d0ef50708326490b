"""Acoustic branch: log-mel patches -> (B, T, semantic_dim) at 25 Hz, the trained half of the encoder.

Names follow the published whole-model layout under `dasheng_tokenizer.encoder.*`
(`front_end.mel_spec.*`, `patch_embed.*`, `norm.*`).
"""

from __future__ import annotations

import torch
from torch import nn

from losatok.config import LoSATokConfig
from losatok.features import LogMelFrontEnd


class AcousticEncoder(nn.Module):
    def __init__(self, config: LoSATokConfig) -> None:
        super().__init__()
        c = config
        self.front_end = LogMelFrontEnd(c.sample_rate, c.acoustic_n_fft, c.acoustic_hop, c.acoustic_n_mels)
        self.patch_embed = nn.Conv2d(
            1,
            c.semantic_dim,
            kernel_size=(c.acoustic_n_mels, c.patch_frames),
            stride=(c.acoustic_n_mels, c.patch_frames),
        )
        self.norm = nn.LayerNorm(c.semantic_dim)  # default eps 1e-5, as published

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, S') STFT-prepared waveforms (see `features.pad_batch_for_stft`) -> (B, T, semantic_dim)."""
        with torch.autocast(device_type=wav.device.type, enabled=False):
            mel = self.front_end(wav.float()).unsqueeze(1)  # (B, 1, n_mels, frames)
        x = self.patch_embed(mel)  # (B, C, 1, frames // patch_frames)
        return self.norm(x.flatten(2).transpose(1, 2))  # (B, T, C)
