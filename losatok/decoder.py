"""Vocos decoder: ConvNeXt backbone and an iSTFT head that emits 16 kHz waveforms.

Names follow the published layout under `dasheng_tokenizer.decoder.*`
(`backbone.{embed,norm,convnext.N.*,final_layer_norm}`, `head.out`, `head.istft.window`).

Batches: given a (B, T) mask of valid frames, every convolution sees zeros past an item's end
(the zero padding it gets alone) and the iSTFT overlap-adds and normalises only the item's own
frames, so each item decodes to the same waveform as alone. Without a mask, padding frames
leak into an item's last frames through the kernel-7 convolutions and the iSTFT overlap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from losatok.config import LoSATokConfig
from losatok.features import frame_mask


def zero_padding(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, C, T) features with frames where (B, T) `mask` is False set to zero; None: unchanged."""
    return x if mask is None else x.masked_fill(~mask[:, None, :], 0.0)


class ConvNeXtBlock(nn.Module):
    """Depthwise conv (k 7) -> LayerNorm -> Linear x4 -> GELU -> Linear, scaled by gamma, residual."""

    def __init__(self, dim: int, intermediate: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, T), optional (B, T) valid-frame mask -> (B, C, T)."""
        y = self.dwconv(zero_padding(x, mask)).transpose(1, 2)  # (B, T, C)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


class VocosBackbone(nn.Module):
    def __init__(self, in_dim: int, dim: int, intermediate: int, depth: int) -> None:
        super().__init__()
        self.embed = nn.Conv1d(in_dim, dim, kernel_size=7, padding=3)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.convnext = nn.ModuleList(ConvNeXtBlock(dim, intermediate, 1.0 / depth) for _ in range(depth))
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, in_dim, T), optional (B, T) valid-frame mask -> (B, T, dim)."""
        x = self.norm(self.embed(zero_padding(x, mask)).transpose(1, 2)).transpose(1, 2)  # (B, dim, T)
        for block in self.convnext:
            x = block(x, mask)
        return self.final_layer_norm(x.transpose(1, 2))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv1d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)


class ISTFT(nn.Module):
    """Inverse STFT with "same" padding, which `torch.istft` does not offer.

    Overlap-adds windowed inverse FFT frames, trims (win - hop) / 2 samples at each end and
    divides by the summed squared window, so T frames give exactly T x hop samples.
    """

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop = hop
        self.register_buffer("window", torch.hann_window(n_fft))

    def forward(self, spec: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, n_fft // 2 + 1, T) complex spectrum, optional (B, T) valid-frame mask -> (B, T x hop).

        With a mask, each item sums and normalises only its own frames (a lone item's envelope);
        its samples past `valid frames x hop` are zero.
        """
        frames = spec.shape[-1]
        trim = (self.n_fft - self.hop) // 2
        chunks = torch.fft.irfft(spec, n=self.n_fft, dim=1) * self.window[None, :, None]  # (B, n_fft, T)
        total = (frames - 1) * self.hop + self.n_fft
        fold = dict(output_size=(1, total), kernel_size=(1, self.n_fft), stride=(1, self.hop))
        window_power = self.window.square()[None, :, None]  # (1, n_fft, 1)
        if mask is None:
            envelope = window_power.expand(1, -1, frames)  # (1, n_fft, T): every item has every frame
        else:
            chunks = zero_padding(chunks, mask)
            envelope = zero_padding(window_power.expand(spec.shape[0], -1, frames), mask)  # (B, n_fft, T)
        audio = F.fold(chunks, **fold)[:, 0, 0, trim : total - trim]  # (B, T x hop)
        envelope = F.fold(envelope, **fold)[:, 0, 0, trim : total - trim]  # (1 or B, T x hop)
        return audio / envelope.clamp(min=1e-11)


class ISTFTHead(nn.Module):
    """Linear -> (log-magnitude, phase) -> complex spectrum -> iSTFT."""

    def __init__(self, dim: int, n_fft: int, hop: int) -> None:
        super().__init__()
        self.out = nn.Linear(dim, n_fft + 2)
        self.istft = ISTFT(n_fft, hop)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, dim), optional (B, T) valid-frame mask -> (B, T x hop) waveform, computed in
        float32 (complex bf16 is unsupported)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            log_mag, phase = self.out(x.float()).transpose(1, 2).chunk(2, dim=1)  # each (B, n_fft/2+1, T)
            magnitude = log_mag.exp().clamp(max=100.0)  # guards against exploding magnitudes
            return self.istft(torch.polar(magnitude, phase), mask)


class VocosDecoder(nn.Module):
    def __init__(self, config: LoSATokConfig) -> None:
        super().__init__()
        c = config
        self.backbone = VocosBackbone(c.semantic_dim, c.decoder_dim, c.decoder_intermediate, c.decoder_depth)
        self.head = ISTFTHead(c.decoder_dim, c.istft_n_fft, c.istft_hop)

    def forward(self, x: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        """(B, semantic_dim, T50) upsampled features -> (B, T50 x istft_hop) waveform.

        (B,) `frames` (at the decoder's 50 Hz) makes the batch items independent; see the module note.
        """
        mask = None if frames is None else frame_mask(frames.to(x.device), x.shape[-1])  # (B, T50)
        return self.head(self.backbone(x, mask), mask)
