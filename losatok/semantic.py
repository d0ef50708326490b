"""Frozen semantic encoder (Dasheng-style audio transformer) and the Semantic Bottleneck.

Module and attribute names follow the published `semantic_encoder.pth` layout
(`encoder.*`, `bottleneck.downsample.{0,2}.*`, `bottleneck.upsample.{0,2}.*`), so its state
dict loads without translation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from losatok.config import LoSATokConfig
from losatok.features import PowerMelFrontEnd, frame_mask, pad_batch_for_stft, power_to_db, valid_mel_frames


def valid_tokens(lengths: torch.Tensor, config: LoSATokConfig) -> torch.Tensor:
    """(B,) tokens a lone item of `lengths` samples yields: (L // hop + 1) // patch_frames."""
    return torch.div(
        valid_mel_frames(lengths, config.semantic_hop), config.patch_frames, rounding_mode="floor"
    )


class MultiHeadSelfAttention(nn.Module):
    """Self-attention with a fused qkv projection, run through PyTorch's SDPA kernels."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, T, C); attn_mask (B, 1, T, T) bool, True where attention is allowed, or None."""
        batch, time, dim = x.shape
        qkv = self.qkv(x).view(batch, time, 3, self.heads, dim // self.heads)  # (B, T, 3, H, C/H)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, C/H)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, T, C/H)
        return self.proj(out.transpose(1, 2).reshape(batch, time, dim))  # (B, T, C)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch (MiDashengLM's `ls1`/`ls2` when `init_values` is set)."""

    def __init__(self, dim: int, init_value: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim) -> (..., dim)."""
        return x * self.gamma


class TransformerBlock(nn.Module):
    """Pre-norm block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))).

    `ls1`/`ls2` are identities (no weights) unless `enable_layer_scale` is called, which a
    checkpoint holding `blocks.N.ls1.gamma` does when it loads.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiHeadSelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls1: nn.Module = nn.Identity()
        self.ls2: nn.Module = nn.Identity()

    def enable_layer_scale(self) -> None:
        """Give both residual branches a LayerScale (on this block's device and dtype)."""
        weight = self.norm1.weight
        for name in ("ls1", "ls2"):
            if not isinstance(getattr(self, name), LayerScale):
                setattr(self, name, LayerScale(weight.shape[0]).to(weight.device, weight.dtype))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T, C) -> (B, T, C)."""
        x = x + self.ls1(self.attn(self.norm1(x), attn_mask))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, n_mels: int, patch_frames: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=(n_mels, patch_frames), stride=(n_mels, patch_frames))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, 1, n_mels, frames) -> (B, dim, 1, frames // patch_frames)."""
        return self.proj(mel)


class SwapChannelsAndMels(nn.Module):
    """(B, C, F, T) <-> (B, F, C, T): lets BatchNorm2d normalise each mel bin."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class DashengEncoder(nn.Module):
    """Dasheng-style audio transformer: waveform -> (B, T, semantic_dim) at 25 Hz.

    The whole mel is patch-embedded, then its tokens are cut into chunks of `chunk_tokens`
    (252 tokens, 10.08 s) that attend only within themselves, each starting its time positions
    at zero, as MiDashengLM's audio encoder does. Any input length works.
    """

    def __init__(self, config: LoSATokConfig) -> None:
        super().__init__()
        c = config
        self.config = config
        self.front_end = PowerMelFrontEnd(
            c.sample_rate, c.semantic_n_fft, c.semantic_hop, c.semantic_n_mels, c.semantic_f_max
        )
        self.init_bn = nn.Sequential(
            SwapChannelsAndMels(), nn.BatchNorm2d(c.semantic_n_mels, momentum=0.01), SwapChannelsAndMels()
        )
        self.patch_embed = PatchEmbed(c.semantic_dim, c.semantic_n_mels, c.patch_frames)
        self.time_pos_embed = nn.Parameter(torch.randn(1, c.semantic_dim, 1, c.chunk_tokens) * 0.02)
        self.freq_pos_embed = nn.Parameter(torch.randn(1, c.semantic_dim, 1, 1) * 0.02)
        self.blocks = nn.ModuleList(
            TransformerBlock(c.semantic_dim, c.semantic_heads, c.semantic_mlp_ratio)
            for _ in range(c.semantic_depth)
        )
        self.norm = nn.LayerNorm(c.semantic_dim, eps=1e-6)

    def enable_layer_scale(self) -> None:
        """Add LayerScale to every block (checkpoints saved with MiDashengLM's `init_values`)."""
        for block in self.blocks:
            block.enable_layer_scale()

    def mel(self, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, S) waveform, prepared by `pad_batch_for_stft` -> (B, 1, n_mels, frames) normalised dB mel."""
        with torch.autocast(device_type=wav.device.type, enabled=False):
            mel = self.front_end(wav.float())  # (B, F, frames)
            mel = power_to_db(
                mel, valid_mel_frames(lengths, self.config.semantic_hop), self.config.semantic_top_db
            )
            return self.init_bn(mel.unsqueeze(1))  # (B, 1, F, frames)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, S') STFT-prepared waveforms and (B,) valid samples -> (B, T, semantic_dim).

        Positions past an item's valid tokens hold finite values that carry no meaning.
        """
        mel = self.mel(wav, lengths)  # (B, 1, F, frames)
        # Patch-embed the whole mel, then cut the tokens into chunks (as MiDashengLM does): a
        # mel chunk shorter than one patch would otherwise make the conv fail, and since the
        # chunk length is a multiple of the patch, every token is the same either way.
        tokens = self.patch_embed(mel).flatten(2).transpose(1, 2)  # (B, T, C)
        time_pos = self.time_pos_embed.flatten(2).transpose(1, 2)  # (1, chunk_tokens, C)
        freq_pos = self.freq_pos_embed.flatten(2).transpose(1, 2)  # (1, 1, C)
        n_valid = valid_tokens(lengths, self.config)  # (B,)
        outputs, start = [], 0
        for x in tokens.split(self.config.chunk_tokens, dim=1):
            t = x.shape[1]
            x = x + time_pos[:, :t] + freq_pos  # each chunk starts its time positions at zero
            valid = frame_mask(n_valid - start, t)  # (B, t)
            attn_mask = None
            if not bool(valid.all()):
                # padded keys are hidden from every query; padded queries see everything so their
                # softmax is never empty (an all -inf row would give NaN that leaks through V)
                attn_mask = valid[:, None, None, :] | ~valid[:, None, :, None]  # (B, 1, t, t)
            for block in self.blocks:
                x = block(x, attn_mask)
            outputs.append(self.norm(x))
            start += t
        return torch.cat(outputs, dim=1)  # (B, T, C)


class SemanticBottleneck(nn.Module):
    """SemBo: high-dim semantic features <-> low-dim latent, trained with `losses.sembo_loss`."""

    def __init__(self, high_dim: int, low_dim: int, hidden: int) -> None:
        super().__init__()
        self.downsample = nn.Sequential(nn.Linear(high_dim, hidden), nn.GELU(), nn.Linear(hidden, low_dim))
        self.upsample = nn.Sequential(nn.Linear(low_dim, hidden), nn.GELU(), nn.Linear(hidden, high_dim))

    def forward(self, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, high_dim) -> low (B, T, low_dim), reconstruction (B, T, high_dim)."""
        low = self.downsample(high)
        return low, self.upsample(low)


class SemanticEncoder(nn.Module):
    """Frozen encoder plus SemBo: the content of the published `semantic_encoder.pth`."""

    def __init__(self, config: LoSATokConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = DashengEncoder(config)
        self.bottleneck = SemanticBottleneck(config.semantic_dim, config.latent_dim, config.sembo_hidden)

    def stft_pad(self) -> int:
        return self.config.semantic_n_fft // 2

    def forward(
        self, wav: torch.Tensor, lengths: torch.Tensor, prepared: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S) waveforms and (B,) valid samples -> high (B, T, semantic_dim), low (B, T, latent_dim).

        `prepared` says `wav` already went through `pad_batch_for_stft` with a pad of at least
        `semantic_n_fft // 2` (the tokenizer prepares once for both branches).
        """
        if not prepared:
            wav = pad_batch_for_stft(wav, lengths, self.stft_pad())
        high = self.encoder(wav, lengths)
        low = self.bottleneck.downsample(high)
        return high, low
