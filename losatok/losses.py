"""Losses of the LoSATok method: SemBo (with the time-relation loss), dual-level semantic
supervision, and the KL with a floor.

Every loss takes an optional (B, T) bool `mask` of valid frames, so padded batches average
over real frames only; without a mask it averages over everything, as the published code does.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

SupervisionMode = Literal["both", "high_only", "low_only"]
SUPERVISION_MODES = ("both", "high_only", "low_only")


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of (B, T, ...) `values` over the positions where the (B, T) `mask` is True."""
    if mask is None:
        return values.mean()
    weights = mask.to(values.dtype).reshape(mask.shape + (1,) * (values.dim() - mask.dim()))
    return (values * weights).sum() / (weights.sum() * values[0, 0].numel()).clamp(min=1)


def cosine_relation(x: torch.Tensor) -> torch.Tensor:
    """S = l2norm(x) @ l2norm(x)^T: (B, T, D) -> (B, T, T) cosine similarity between all frame pairs."""
    unit = F.normalize(x, dim=-1)
    return unit @ unit.transpose(1, 2)


def time_relation_loss(
    low: torch.Tensor, high: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """MSE(S_low, S_high.detach()): keeps the frame-to-frame similarity structure through SemBo.

    `low` (B, T, d) and `high` (B, T, D); pairs involving a padded frame are left out. Zero
    exactly when the low-dim features preserve every pairwise cosine similarity.
    """
    squared = (cosine_relation(low) - cosine_relation(high).detach()).square()  # (B, T, T)
    pair_mask = None if mask is None else mask[:, :, None] & mask[:, None, :]
    if pair_mask is None:
        return squared.mean()
    weights = pair_mask.to(squared.dtype)
    return (squared * weights).sum() / weights.sum().clamp(min=1)


def sembo_loss(
    high: torch.Tensor, reconstruction: torch.Tensor, low: torch.Tensor, mask: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """SemBo objective: MSE(l2norm(up(down(h))), l2norm(h)) + MSE(S_low, S_high).

    Args:
        high: (B, T, D) frozen encoder features h.
        reconstruction: (B, T, D) up(down(h)).
        low: (B, T, d) down(h).
    Returns:
        {"reconstruction", "relation", "total"} scalars.
    """
    recon = masked_mean(
        (F.normalize(reconstruction, dim=-1) - F.normalize(high.detach(), dim=-1)).square(), mask
    )
    relation = time_relation_loss(low, high, mask)
    return {"reconstruction": recon, "relation": relation, "total": recon + relation}


def semantic_supervision_loss(
    acoustic_high: torch.Tensor,
    semantic_high: torch.Tensor,
    acoustic_low: torch.Tensor,
    semantic_low: torch.Tensor,
    mode: SupervisionMode = "both",
    mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Dual-level semantic supervision of the acoustic branch.

    high = MSE(acoustic_high, semantic_high.detach()); low = MSE(acoustic_low, semantic_low.detach());
    total = high + low ("both"), high ("high_only") or low ("low_only"). The term a mode
    leaves out is still returned, detached, for logging.
    """
    if mode not in SUPERVISION_MODES:
        raise ValueError(f"unknown semantic supervision mode {mode!r}; expected one of {SUPERVISION_MODES}")
    high = masked_mean((acoustic_high - semantic_high.detach()).square(), mask)
    low = masked_mean((acoustic_low - semantic_low.detach()).square(), mask)
    if mode == "both":
        total = high + low
    elif mode == "high_only":
        total, low = high, low.detach()
    else:
        total, high = low, high.detach()
    return {"high": high, "low": low, "total": total}


def kl_loss(
    mu: torch.Tensor, logvar: torch.Tensor, floor: float | None = None, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) with a per-dimension floor ("free bits").

    Per dimension: kl = -0.5 (1 + logvar - mu^2 - exp(logvar)), raised to at least `floor`
    (the published checkpoints use 1e-3 and 1e-2), summed over the latent dims and averaged
    over frames. A dimension already under the floor gets no gradient.
    """
    per_dim = -0.5 * (1 + logvar - mu.square() - logvar.exp())  # (B, T, d)
    if floor is not None:
        per_dim = per_dim.clamp(min=floor)
    return masked_mean(per_dim.sum(dim=-1, keepdim=True), mask)


class MultiResolutionMelLoss(torch.nn.Module):
    """Mean over resolutions of L1 between log mels: |log clip(mel(ref)) - log clip(mel(est))|.

    Resolutions (n_fft, hop, n_mels) span 32 to 128 ms windows at 16 kHz; the mel filterbanks
    are built once here, not on every call.
    """

    def __init__(
        self, sample_rate: int = 16_000, resolutions=((512, 128, 64), (1024, 256, 80), (2048, 512, 128))
    ) -> None:
        super().__init__()
        import torchaudio

        self.mels = torch.nn.ModuleList(
            torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=n, hop_length=h, n_mels=m, power=1.0)
            for n, h, m in resolutions
        )

    def forward(self, reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
        """(B, S) waveforms (cut to the shorter) -> scalar."""
        length = min(reference.shape[-1], estimate.shape[-1])
        reference, estimate = reference[..., :length].float(), estimate[..., :length].float()
        terms = [
            (mel(reference).clamp(min=1e-5).log() - mel(estimate).clamp(min=1e-5).log()).abs().mean()
            for mel in self.mels
        ]
        return torch.stack(terms).mean()
