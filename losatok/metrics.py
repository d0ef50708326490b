"""Reconstruction metrics of a tokenizer: mel distance, multi-resolution STFT distance, SI-SDR,
and the semantic preservation of SemBo. Waveforms are (S,) or (B, S) at one sample rate."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchaudio

STFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))  # (n_fft, hop): fine time to fine frequency


def _batch(wav: torch.Tensor) -> torch.Tensor:
    return wav[None] if wav.dim() == 1 else wav


def _aligned(reference: torch.Tensor, estimate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both as (B, S) float32, cut to the shorter length (a decoder emits whole tokens)."""
    reference, estimate = _batch(reference).float(), _batch(estimate).float()
    length = min(reference.shape[-1], estimate.shape[-1])
    return reference[..., :length], estimate[..., :length]


def mel_distance(reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int = 16_000) -> float:
    """Mean |log mel(ref) - log mel(est)| (80 mels, n_fft 1024, hop 256, log of clipped magnitude)."""
    reference, estimate = _aligned(reference, estimate)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=1024, hop_length=256, n_mels=80, power=1.0)
    return float((mel(reference).clamp(min=1e-5).log() - mel(estimate).clamp(min=1e-5).log()).abs().mean())


def stft_distance(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """Multi-resolution STFT distance: per resolution, spectral convergence + mean |log magnitude
    difference|, averaged over `STFT_RESOLUTIONS`."""
    reference, estimate = _aligned(reference, estimate)
    total = 0.0
    for n_fft, hop in STFT_RESOLUTIONS:
        window = torch.hann_window(n_fft)
        spec = [
            torch.stft(x, n_fft, hop, window=window, return_complex=True).abs() for x in (reference, estimate)
        ]
        convergence = torch.linalg.norm(spec[0] - spec[1]) / torch.linalg.norm(spec[0]).clamp(min=1e-8)
        log_magnitude = (spec[0].clamp(min=1e-7).log() - spec[1].clamp(min=1e-7).log()).abs().mean()
        total += float(convergence + log_magnitude)
    return total / len(STFT_RESOLUTIONS)


def si_sdr(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """Scale-invariant signal-to-distortion ratio in dB, mean over the batch (zero-mean signals)."""
    reference, estimate = _aligned(reference, estimate)
    reference = reference - reference.mean(-1, keepdim=True)
    estimate = estimate - estimate.mean(-1, keepdim=True)
    scale = (estimate * reference).sum(-1, keepdim=True) / reference.square().sum(-1, keepdim=True).clamp(
        min=1e-8
    )
    target = scale * reference
    noise = estimate - target
    ratio = target.square().sum(-1) / noise.square().sum(-1).clamp(min=1e-12)
    return float((10 * torch.log10(ratio.clamp(min=1e-12))).mean())


def semantic_preservation(high: torch.Tensor, reconstruction: torch.Tensor) -> float:
    """Mean cosine similarity over frames between features and their SemBo round trip, (T, D) each."""
    return float(F.cosine_similarity(high.float(), reconstruction.float(), dim=-1).mean())
