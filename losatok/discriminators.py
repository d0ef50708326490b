"""Discriminators for Vocos-style tokenizer training, and their losses.

Multi-period (HiFi-GAN): the waveform folded into (S / p, p) columns for several primes p,
judged by 2-D convolutions along time. Multi-resolution (UnivNet/Vocos): STFT magnitudes at
several resolutions, judged by 2-D convolutions over (time, frequency). Each sub-discriminator
returns its logits and every intermediate feature map (for feature matching).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

Outputs = list[tuple[torch.Tensor, list[torch.Tensor]]]  # per sub-discriminator: (logits, features)


@dataclass(frozen=True)
class DiscriminatorConfig:
    periods: tuple[int, ...] = (2, 3, 5, 7, 11)  # primes: each period sees a different folding
    resolutions: tuple[tuple[int, int], ...] = ((512, 128), (1024, 256), (2048, 512))  # (n_fft, hop)
    period_widths: tuple[int, ...] = (32, 128, 512, 1024)  # HiFi-GAN's layer widths
    channels: int = 32  # width of every resolution-discriminator layer (Vocos/UnivNet: 32)


def tiny_discriminators() -> DiscriminatorConfig:
    return DiscriminatorConfig(
        periods=(2, 3), resolutions=((256, 64), (512, 128)), period_widths=(8, 16, 32, 32), channels=8
    )


def _judge(convs: nn.ModuleList, post: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Conv stack with leaky ReLU (0.1), then the 1-channel post conv: (logits (B, N), every feature map)."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), 0.1)
        features.append(x)
    x = post(x)
    features.append(x)
    return x.flatten(1), features


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.period = period
        widths = [1, *widths]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(a, b, (5, 1), (3, 1), padding=(2, 0)))
            for a, b in zip(widths, widths[1:], strict=False)
        )
        self.convs.append(weight_norm(nn.Conv2d(widths[-1], widths[-1], (5, 1), padding=(2, 0))))
        self.post = weight_norm(nn.Conv2d(widths[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, S) -> logits (B, N), features."""
        pad = (-wav.shape[-1]) % self.period
        x = F.pad(wav, (0, pad), mode="reflect")[:, None, :]  # (B, 1, S')
        x = x.view(x.shape[0], 1, -1, self.period)  # (B, 1, S' / p, p)
        return _judge(self.convs, self.post, x)


class ResolutionDiscriminator(nn.Module):
    def __init__(self, n_fft: int, hop: int, channels: int) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.convs = nn.ModuleList(
            [
                weight_norm(nn.Conv2d(1, channels, (7, 5), (2, 2), padding=(3, 2))),
                weight_norm(nn.Conv2d(channels, channels, (5, 3), (2, 1), padding=(2, 1))),
                weight_norm(nn.Conv2d(channels, channels, (5, 3), (2, 2), padding=(2, 1))),
                weight_norm(nn.Conv2d(channels, channels, 3, padding=1)),
            ]
        )
        self.post = weight_norm(nn.Conv2d(channels, 1, 3, padding=1))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, S) -> logits (B, N), features."""
        spec = torch.stft(wav.float(), self.n_fft, self.hop, window=self.window, return_complex=True).abs()
        return _judge(self.convs, self.post, spec[:, None])  # (B, 1, F, T) in


class Discriminators(nn.Module):
    """All sub-discriminators; `forward` judges a waveform batch with each."""

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        self.periods = nn.ModuleList(PeriodDiscriminator(p, config.period_widths) for p in config.periods)
        self.resolutions = nn.ModuleList(
            ResolutionDiscriminator(n, h, config.channels) for n, h in config.resolutions
        )

    def forward(self, wav: torch.Tensor) -> Outputs:
        """(B, S) waveforms -> [(logits (B, N_i), features_i)] for every sub-discriminator."""
        return [d(wav) for d in (*self.periods, *self.resolutions)]


def discriminator_loss(real: Outputs, fake: Outputs) -> torch.Tensor:
    """Least-squares GAN: sum over sub-discriminators of mean (1 - D(real))^2 + mean D(fake)^2."""
    return sum(
        ((1 - r).square().mean() + f.square().mean() for (r, _), (f, _) in zip(real, fake, strict=True)),
        torch.zeros(()),
    )


def generator_loss(fake: Outputs) -> torch.Tensor:
    """Least-squares GAN, generator side: sum of mean (1 - D(fake))^2."""
    return sum(((1 - f).square().mean() for f, _ in fake), torch.zeros(()))


def feature_matching_loss(real: Outputs, fake: Outputs) -> torch.Tensor:
    """Mean |features(real) - features(fake)| over every layer of every sub-discriminator (real detached)."""
    terms = [
        (r.detach() - f).abs().mean()
        for (_, rf), (_, ff) in zip(real, fake, strict=True)
        for r, f in zip(rf, ff, strict=True)
    ]
    return torch.stack(terms).mean()
