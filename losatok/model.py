"""The LoSATok tokenizer: semantic and acoustic streams fused into a 25 Hz VAE latent, and back.

Attribute names (`semantic_encoder`, `dasheng_tokenizer`, `fc_a`, `fc_mu`, `fc_logvar`) are
those of the published whole-model checkpoints, so their state dicts load as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from losatok.acoustic import AcousticEncoder
from losatok.config import LoSATokConfig
from losatok.decoder import VocosDecoder
from losatok.features import frame_mask, pad_batch_for_stft
from losatok.semantic import SemanticEncoder, valid_tokens


@dataclass
class TokenizerFeatures:
    """Every stream of one forward pass; tensors are (B, T, dim) at 25 Hz, `frames` is (B,)."""

    semantic_high: torch.Tensor  # frozen encoder output (semantic_dim)
    semantic_low: torch.Tensor  # SemBo.down(semantic_high) (latent_dim)
    acoustic_high: torch.Tensor  # acoustic branch (semantic_dim)
    acoustic_low: torch.Tensor  # fc_a(acoustic_high) (latent_dim)
    mu: torch.Tensor  # posterior mean (latent_dim)
    logvar: torch.Tensor  # posterior log-variance, clamped (latent_dim)
    frames: torch.Tensor  # valid frames per item; positions past them are padding

    @property
    def mask(self) -> torch.Tensor:
        """(B, T) bool, True on valid frames."""
        return frame_mask(self.frames, self.mu.shape[1])


@dataclass
class EncodeResult:
    """Inference output of `LoSATok.encode`: float32 tensors (B, T, dim), `frames` (B,) int64.

    Only the first `frames[b]` rows of item b are meaningful; `items()` cuts them out.
    """

    z: torch.Tensor  # the latent: mu at inference, or a posterior sample when asked
    mu: torch.Tensor
    logvar: torch.Tensor
    semantic_high: torch.Tensor
    semantic_low: torch.Tensor
    frames: torch.Tensor

    def item(self, index: int) -> dict[str, torch.Tensor]:
        """Valid frames of one item: {field: (frames[index], dim)}."""
        n = int(self.frames[index])
        return {
            name: getattr(self, name)[index, :n]
            for name in ("z", "mu", "logvar", "semantic_high", "semantic_low")
        }


class AcousticTokenizer(nn.Module):
    """Acoustic branch, latent upsampler and decoder: the published `dasheng_tokenizer.*` subtree."""

    def __init__(self, config: LoSATokConfig) -> None:
        super().__init__()
        c = config
        self.encoder = AcousticEncoder(c)
        self.upsampler = nn.ConvTranspose1d(
            c.latent_dim, c.semantic_dim, kernel_size=c.upsample_factor, stride=c.upsample_factor
        )
        self.decoder = VocosDecoder(c)

    def decode(self, z: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, latent_dim), optional (B,) valid latent frames -> (B, T x samples_per_token) waveform.

        With `frames`, each item's waveform is the one it gets decoded alone (padding frames do
        not leak into it) and is zero past `frames[b] x samples_per_token`.
        """
        x = self.upsampler(z.transpose(1, 2))  # (B, semantic_dim, T x upsample_factor)
        upsampled = None if frames is None else frames * self.upsampler.stride[0]  # (B,) at 50 Hz
        return self.decoder(x, upsampled)


class LoSATok(nn.Module):
    """The tokenizer. `encode`/`decode` are the inference API; `features` is the differentiable pass."""

    def __init__(self, config: LoSATokConfig) -> None:
        super().__init__()
        c = config
        self.config = config
        self.semantic_encoder = SemanticEncoder(c)
        self.dasheng_tokenizer = AcousticTokenizer(c)
        self.fc_a = nn.Linear(c.semantic_dim, c.latent_dim)
        self.fc_mu = nn.Linear(c.latent_dim, c.latent_dim)
        self.fc_logvar = nn.Linear(c.latent_dim, c.latent_dim)
        self.freeze_semantic_encoder()

    # --- frozen parts ------------------------------------------------------------------------
    def freeze_semantic_encoder(self) -> None:
        """The semantic encoder and SemBo are frozen: no gradients, BatchNorm statistics fixed."""
        self.semantic_encoder.requires_grad_(False)
        self.semantic_encoder.eval()

    def train(self, mode: bool = True) -> LoSATok:
        super().train(mode)
        self.semantic_encoder.eval()  # stays in eval even while the rest trains
        return self

    # --- shapes ------------------------------------------------------------------------------
    @property
    def min_samples(self) -> int:
        """Shortest input: one token, and long enough for the centred STFTs' reflection."""
        return max(self.config.samples_per_token, self.stft_pad + 1)

    @property
    def stft_pad(self) -> int:
        return max(self.config.semantic_n_fft, self.config.acoustic_n_fft) // 2

    def frames_for(self, lengths: torch.Tensor) -> torch.Tensor:
        """(B,) latent frames for inputs of `lengths` samples (25 per second of audio)."""
        return valid_tokens(lengths, self.config)

    # --- the differentiable pass ------------------------------------------------------------
    def features(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> TokenizerFeatures:
        """(B, S) 16 kHz waveforms, zero-padded after (B,) `lengths` samples -> every stream.

        Each item's valid frames equal those of the same item encoded alone (to float
        tolerance): the STFTs see each item's own reflection, the dB floor is per item, and
        attention masks padded tokens.
        """
        if wav.dim() != 2:
            raise ValueError(f"expected waveforms of shape (batch, samples), got {tuple(wav.shape)}")
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[1], dtype=torch.long, device=wav.device)
        lengths = lengths.to(device=wav.device, dtype=torch.long)
        short = (lengths < self.min_samples).nonzero().flatten().tolist()
        if short:
            raise ValueError(
                f"batch items {short} are shorter than {self.min_samples} samples "
                f"({self.min_samples / self.config.sample_rate * 1000:.0f} ms), the minimum the tokenizer encodes"
            )
        if int(lengths.max()) > wav.shape[1]:
            raise ValueError(
                f"lengths go up to {int(lengths.max())} samples but the batch holds {wav.shape[1]}"
            )

        prepared = pad_batch_for_stft(wav.float(), lengths, self.stft_pad)  # (B, S + pad)
        with torch.no_grad():
            semantic_high, semantic_low = self.semantic_encoder(prepared, lengths, prepared=True)
        acoustic_high = self.dasheng_tokenizer.encoder(prepared)

        frames = self.frames_for(lengths)
        time = int(frames.max())  # both streams hold at least this many frames
        semantic_high, semantic_low = semantic_high[:, :time], semantic_low[:, :time]
        acoustic_high = acoustic_high[:, :time]

        acoustic_low = self.fc_a(acoustic_high)
        unified_low = acoustic_low + semantic_low  # (B, T, latent_dim)
        mu = self.fc_mu(unified_low)
        limit = self.config.logvar_clamp
        logvar = self.fc_logvar(unified_low).clamp(-limit, limit)
        return TokenizerFeatures(semantic_high, semantic_low, acoustic_high, acoustic_low, mu, logvar, frames)

    @staticmethod
    def sample_posterior(
        mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """z = mu + eps * exp(logvar / 2), eps ~ N(0, I)."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + eps * (0.5 * logvar).exp()

    # --- inference API -----------------------------------------------------------------------
    def _autocast(self, device: torch.device, bf16: bool | None):
        enabled = device.type == "cuda" if bf16 is None else bf16
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)

    @torch.inference_mode()
    def encode(
        self,
        wav: torch.Tensor,
        lengths: torch.Tensor | None = None,
        sample: bool = False,
        bf16: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> EncodeResult:
        """Encode a padded batch of 16 kHz waveforms.

        Args:
            wav: (B, S) or (S,) float waveforms at `config.sample_rate`.
            lengths: (B,) valid samples per item; None means every item fills S.
            sample: draw z from the posterior instead of using its mean.
            bf16: run under bfloat16 autocast; None means on CUDA only. Front ends and the
                iSTFT always run in float32.
        Returns:
            EncodeResult with (B, T, dim) float32 tensors, T = max frames, and (B,) frames:
            L // 160 + 1 mel frames // 4, i.e. 25 per second (N s of audio -> 25 N frames).
        """
        if wav.dim() == 1:
            wav = wav[None]
        bad = (~torch.isfinite(wav)).any(dim=-1).nonzero().flatten().tolist()
        if bad:
            raise ValueError(f"batch items {bad} hold NaN or infinite samples")
        with self._autocast(wav.device, bf16):
            f = self.features(wav, lengths)
        z = self.sample_posterior(f.mu.float(), f.logvar.float(), generator) if sample else f.mu
        return EncodeResult(
            z=z.float(),
            mu=f.mu.float(),
            logvar=f.logvar.float(),
            semantic_high=f.semantic_high.float(),
            semantic_low=f.semantic_low.float(),
            frames=f.frames,
        )

    @torch.inference_mode()
    def decode(
        self, z: torch.Tensor, frames: torch.Tensor | None = None, bf16: bool | None = None
    ) -> torch.Tensor:
        """(B, T, latent_dim) or (T, latent_dim) latents -> (B, T x 640) float32 waveforms.

        With (B,) `frames`, each item decodes to the waveform it gets alone (padding frames
        never leak through the convolutions or the iSTFT overlap-add), and its samples past
        `frames[b] x 640` are zero.
        """
        if z.dim() == 2:
            z = z[None]
        if z.shape[-1] != self.config.latent_dim:
            raise ValueError(
                f"latents have {z.shape[-1]} channels; this model's latent_dim is {self.config.latent_dim}"
            )
        if frames is not None:
            frames = frames.to(device=z.device, dtype=torch.long)
        with self._autocast(z.device, bf16):
            audio = self.dasheng_tokenizer.decode(z, frames).float()  # (B, T x 640)
        if frames is not None:
            valid = frame_mask(frames * self.config.samples_per_token, audio.shape[-1])
            audio = audio * valid
        return audio
