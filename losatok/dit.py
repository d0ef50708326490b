"""Diffusion transformer over LoSATok latent sequences (B, T, latent_dim) at 25 Hz.

Each block is adaLN-zero conditioned on the flow time t (DiT, Peebles & Xie 2023), runs
self-attention with rotary positions over the latent frames, cross-attends to text tokens and
ends with a GELU MLP. The model predicts the flow velocity (see `losatok.flow`); optionally the
hidden state of one block is projected to a semantic target for representation alignment.
Dropping the conditioning for classifier-free guidance is the trainer's choice (`drop_text`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from losatok.config import dataclass_from_dict
from losatok.semantic import Mlp
from losatok.text import ByteTextEncoder, TextEncoder, TextEncoderConfig

TIME_FEATURES = 256  # sinusoidal width of the time embedding, as in DiT
TIME_SCALE = 1000.0  # t in [0, 1] is scaled so its features span the frequencies of DiT's 1000 steps


@dataclass(frozen=True)
class DiTConfig:
    latent_dim: int = 128  # LoSATok latent width (16 for the tiny tokenizer)
    dim: int = 512  # transformer width
    depth: int = 8  # blocks
    heads: int = 8  # 64-dim heads; head width must be even for rotary pairs
    mlp_ratio: float = 4.0

    # --- byte text encoder (ignored when a TextEncoder is passed to DiT) ----------------------
    text_dim: int = 512
    text_depth: int = 4
    text_heads: int = 8
    text_max_len: int = 256  # bytes kept per transcript or caption; encode_texts truncates to it

    rope_base: float = 10000.0  # longest rotary wavelengths: ~10^4 frames, far past max_frames
    # Longest item (frames) trainers should feed: 120 s at 25 Hz. Rotary positions need no table,
    # so the model itself accepts any length; this documents the length it was trained for.
    max_frames: int = 3000

    # --- semantic alignment (REPA-style) -------------------------------------------------------
    semantic_align_layer: int | None = None  # block (0-based) whose output is projected; None: no head
    semantic_dim: int | None = None  # target width: 128 for semantic_low, 1280 for semantic_high

    def __post_init__(self) -> None:
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise ValueError(
                f"dim {self.dim} must split into {self.heads} heads of even width (rotary pairs)"
            )
        if self.text_dim % self.text_heads:
            raise ValueError(f"text_dim {self.text_dim} is not divisible by {self.text_heads} heads")
        if (self.semantic_align_layer is None) != (self.semantic_dim is None):
            raise ValueError("semantic_align_layer and semantic_dim are set together or not at all")
        if self.semantic_align_layer is not None and not 0 <= self.semantic_align_layer < self.depth:
            raise ValueError(
                f"semantic_align_layer {self.semantic_align_layer} is not a block of 0..{self.depth - 1}"
            )

    @property
    def text(self) -> TextEncoderConfig:
        return TextEncoderConfig(self.text_dim, self.text_depth, self.text_heads, self.text_max_len)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DiTConfig:
        return dataclass_from_dict(cls, values, "DiT")


def dit_tiny() -> DiTConfig:
    """For the tiny tokenizer (16-dim latents): about 0.3 M weights, trains on a CPU in seconds."""
    return DiTConfig(latent_dim=16, dim=64, depth=2, heads=4, text_dim=64, text_depth=1, text_heads=4)


def dit_small() -> DiTConfig:
    """About 26 M weights: single-GPU TTS / TTM / TTA experiments."""
    return DiTConfig(dim=384, depth=6, heads=6, text_dim=384, text_depth=3, text_heads=6)


def dit_base() -> DiTConfig:
    """About 166 M weights (DiT-B width and depth, plus the text encoder and cross-attention)."""
    return DiTConfig(dim=768, depth=12, heads=12, text_dim=512, text_depth=4, text_heads=8)


DIT_PRESETS = {"tiny": dit_tiny, "small": dit_small, "base": dit_base}


def dit_preset(name: str) -> DiTConfig:
    """Look up a preset by name; the error lists the known ones."""
    try:
        return DIT_PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown DiT preset {name!r}; known presets: {sorted(DIT_PRESETS)}") from None


# --- parts ---------------------------------------------------------------------------------------
def timestep_features(t: torch.Tensor, width: int = TIME_FEATURES) -> torch.Tensor:
    """(B,) times in [0, 1] -> (B, width) [cos | sin] features over geometric frequencies."""
    half = width // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * TIME_SCALE * freqs[None]  # (B, width / 2)
    return torch.cat([angles.cos(), angles.sin()], dim=-1)  # (B, width)


class TimestepEmbedder(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(TIME_FEATURES, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, dim)."""
        return self.mlp(timestep_features(t))


def rotary_tables(
    length: int, head_dim: int, base: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (T, head_dim / 2) float32 for positions 0..T-1: every item starts at frame 0."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv_freq[None]  # (T, D/2)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, D) queries or keys by position; channel i pairs with i + D/2 (GPT-NeoX layout)."""
    x1, x2 = x.float().chunk(2, dim=-1)  # each (B, H, T, D/2)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(B, T, C) normalised x, (B, 1, C) shift and scale -> x * (1 + scale) + shift."""
    return x * (1 + scale) + shift


class RotarySelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """x (B, T, C); attn_mask (B, 1, T, T) bool, True = attend, or None; rope from `rotary_tables`."""
        batch, time, dim = x.shape
        qkv = self.qkv(x).view(batch, time, 3, self.heads, dim // self.heads)  # (B, T, 3, H, C/H)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, C/H)
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, T, C/H)
        return self.proj(out.transpose(1, 2).reshape(batch, time, dim))  # (B, T, C)


class CrossAttention(nn.Module):
    def __init__(self, dim: int, context_dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, C), context (B, L, context_dim), context_mask (B, L) bool -> (B, T, C).

        Every row of `context_mask` must hold at least one True (the DiT's null token does).
        """
        batch, time, dim = x.shape
        head_dim = dim // self.heads
        q = self.q(x).view(batch, time, self.heads, head_dim).transpose(1, 2)  # (B, H, T, C/H)
        kv = self.kv(context).view(batch, context.shape[1], 2, self.heads, head_dim)  # (B, L, 2, H, C/H)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, C/H)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=context_mask[:, None, None, :]
        )  # (B, H, T, C/H)
        return self.proj(out.transpose(1, 2).reshape(batch, time, dim))  # (B, T, C)


class DiTBlock(nn.Module):
    """adaLN-zero self-attention, plain pre-norm cross-attention, adaLN-zero MLP.

    The modulation and the cross-attention output are zero at init, so the block starts as the
    identity. Cross-attention is not time-modulated (as in PixArt-alpha): text is the same at every t.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, context_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = RotarySelfAttention(dim, heads)
        self.norm_cross = nn.LayerNorm(dim, eps=1e-6)
        self.cross = CrossAttention(dim, context_dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        attn_mask: torch.Tensor | None,
        rope: tuple[torch.Tensor, torch.Tensor],
        context: torch.Tensor,
        context_mask: torch.Tensor,
    ) -> torch.Tensor:
        """x (B, T, C), c (B, C) time embedding, context (B, L, context_dim) -> (B, T, C)."""
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.modulation(c)[:, None].chunk(6, dim=-1)
        x = x + gate_a * self.attn(modulate(self.norm1(x), shift_a, scale_a), attn_mask, rope)
        x = x + self.cross(self.norm_cross(x), context, context_mask)
        return x + gate_m * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


class FinalLayer(nn.Module):
    """adaLN + linear to the latent width; both zero at init, so the DiT starts predicting zero."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x (B, T, C), c (B, C) -> (B, T, out_dim)."""
        shift, scale = self.modulation(c)[:, None].chunk(2, dim=-1)  # each (B, 1, C)
        return self.linear(modulate(self.norm(x), shift, scale))


@dataclass
class DiTOutput:
    velocity: torch.Tensor  # (B, T, latent_dim) predicted flow velocity; zero at padded frames
    semantic: torch.Tensor | None  # (B, T, semantic_dim) projection of block semantic_align_layer, or None


class DiT(nn.Module):
    """Text-conditioned diffusion transformer predicting the flow velocity of latent sequences."""

    def __init__(self, config: DiTConfig, text_encoder: TextEncoder | None = None) -> None:
        super().__init__()
        c = config
        self.config = config
        self.input_proj = nn.Linear(c.latent_dim, c.dim)
        self.time_embed = TimestepEmbedder(c.dim)
        context_dim = c.text_dim if text_encoder is None else text_encoder.dim
        # attended by every row, and the only key of rows without text: the unconditional input
        self.null_text = nn.Parameter(torch.randn(1, 1, context_dim) * 0.02)
        self.blocks = nn.ModuleList(
            DiTBlock(c.dim, c.heads, c.mlp_ratio, context_dim) for _ in range(c.depth)
        )
        self.final = FinalLayer(c.dim, c.latent_dim)
        self.semantic_head = None if c.semantic_dim is None else nn.Linear(c.dim, c.semantic_dim)
        self._init_weights()
        # attached after init so a pretrained encoder passed in keeps its weights
        self.text_encoder = ByteTextEncoder(c.text) if text_encoder is None else text_encoder

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for layer in self.time_embed.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=0.02)
        zeroed = [block.modulation[-1] for block in self.blocks] + [block.cross.proj for block in self.blocks]
        for layer in [*zeroed, self.final.modulation[-1], self.final.linear]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def encode_text(
        self, text_ids: torch.Tensor, text_mask: torch.Tensor, drop_text: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) ids and mask -> context (B, 1 + L, context_dim) with the null token first, mask (B, 1 + L).

        Rows with `drop_text` True keep only the null token, exactly like an empty text.
        """
        text_mask = text_mask.bool()
        if drop_text is not None:
            text_mask = text_mask & ~drop_text.bool()[:, None]
        tokens = self.text_encoder(text_ids, text_mask)  # (B, L, context_dim)
        null = self.null_text.to(tokens.dtype).expand(tokens.shape[0], 1, -1)  # (B, 1, context_dim)
        context = torch.cat([null, tokens], dim=1)  # (B, 1 + L, context_dim)
        context_mask = F.pad(text_mask, (1, 0), value=True)  # (B, 1 + L)
        return context, context_mask

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        mask: torch.Tensor,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        drop_text: torch.Tensor | None = None,
    ) -> DiTOutput:
        """Predict the velocity at x_t.

        Args:
            x: (B, T, latent_dim) noisy latents x_t.
            t: (B,) flow time in [0, 1] (0 = noise, 1 = data), or a scalar for the whole batch.
            mask: (B, T) bool, True on valid frames. Padded frames are zeroed on input and hidden
                from valid ones, so they never influence valid outputs; their outputs are zero.
            text_ids, text_mask: (B, L) from `encode_texts`.
            drop_text: (B,) bool; True replaces that row's text with the null condition.
        Returns:
            DiTOutput: velocity (B, T, latent_dim), semantic (B, T, semantic_dim) or None.
        """
        batch, time, _ = x.shape
        valid = mask.bool()
        t = t.expand(batch) if t.dim() == 0 else t
        h = self.input_proj(torch.where(valid[..., None], x, 0.0))  # (B, T, dim)
        c = self.time_embed(t)  # (B, dim)
        context, context_mask = self.encode_text(text_ids, text_mask, drop_text)
        attn_mask = None
        if not bool(valid.all()):
            # padded keys are hidden from every query; padded queries see everything so their
            # softmax is never empty (an all -inf row would give NaN)
            attn_mask = valid[:, None, None, :] | ~valid[:, None, :, None]  # (B, 1, T, T)
        rope = rotary_tables(time, self.config.dim // self.config.heads, self.config.rope_base, x.device)

        semantic = None
        for index, block in enumerate(self.blocks):
            h = block(h, c, attn_mask, rope, context, context_mask)
            if self.semantic_head is not None and index == self.config.semantic_align_layer:
                semantic = self.semantic_head(h) * valid[..., None]  # (B, T, semantic_dim)
        velocity = self.final(h, c) * valid[..., None]  # (B, T, latent_dim)
        return DiTOutput(velocity=velocity, semantic=semantic)
