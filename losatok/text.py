"""Text conditioning for the DiT: UTF-8 bytes -> ids, and a small trainable byte-level encoder.

Bytes need no tokenizer file and cover every language and every caption, which is what a
default that must run offline and in tests wants. A pretrained text encoder can be plugged in
instead by subclassing `TextEncoder` (its weights loaded from a local path by the caller, since
nothing in `losatok` downloads) and passing it to `DiT(config, text_encoder=...)`; it then
receives the same (ids, mask) pair, or the caller re-tokenises before the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from losatok.semantic import TransformerBlock

PAD_ID = 0  # id 0 is padding, so byte b is id b + 1
BYTE_VOCAB = 257  # 256 byte values + padding


def encode_texts(texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts -> ids (B, L) int64 and mask (B, L) bool, True on real tokens.

    Byte b of a text's UTF-8 encoding becomes id b + 1; texts are cut after `max_len` bytes
    (possibly inside a multi-byte character, which a byte model tolerates) and right-padded with
    `PAD_ID`. L is the longest text's length, at least 1, so an empty text gives a row whose mask
    is False everywhere: the model must treat it as "no text" (the DiT's null token does).
    """
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    encoded = [list(text.encode("utf-8"))[:max_len] for text in texts]
    length = max([1, *(len(e) for e in encoded)])
    ids = torch.full((len(texts), length), PAD_ID, dtype=torch.long)  # (B, L)
    for row, values in enumerate(encoded):
        if values:
            ids[row, : len(values)] = torch.tensor(values, dtype=torch.long) + 1
    return ids, ids != PAD_ID


class TextEncoder(nn.Module):
    """Base of text encoders: (B, L) ids and mask -> (B, L, dim) token features.

    Subclasses set `dim` and implement `forward`. Outputs at masked positions must be finite;
    their values are ignored downstream.
    """

    dim: int

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids (B, L) int64, mask (B, L) bool True on real tokens -> (B, L, dim)."""
        raise NotImplementedError


@dataclass(frozen=True)
class TextEncoderConfig:
    dim: int = 512  # token width; the DiT's cross-attention projects it to its own width
    depth: int = 4  # a few layers: enough to mix bytes into word-level features, cheap next to the DiT
    heads: int = 8
    max_len: int = 256  # bytes, length of the position table: a few sentences or a long caption

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"text dim {self.dim} is not divisible by {self.heads} heads")


class ByteTextEncoder(TextEncoder):
    """Byte embedding + learned positions + pre-norm transformer layers + final LayerNorm."""

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.dim = config.dim
        self.embed = nn.Embedding(BYTE_VOCAB, config.dim)
        self.positions = nn.Parameter(torch.randn(config.max_len, config.dim) * 0.02)
        self.blocks = nn.ModuleList(
            TransformerBlock(config.dim, config.heads, 4.0) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids (B, L) int64, mask (B, L) bool -> (B, L, dim); L must not exceed `max_len`.

        Padded tokens are hidden from real ones; each padded query attends to every token so its
        softmax is never empty, which keeps all-padding rows (empty texts) finite.
        """
        length = ids.shape[1]
        if length > self.config.max_len:
            raise ValueError(
                f"text of {length} tokens exceeds max_len {self.config.max_len}; "
                "encode_texts(texts, max_len) truncates"
            )
        x = self.embed(ids) + self.positions[:length]  # (B, L, dim)
        attn_mask = None
        if not bool(mask.all()):
            attn_mask = mask[:, None, None, :] | ~mask[:, None, :, None]  # (B, 1, L, L)
        for block in self.blocks:
            x = block(x, attn_mask)
        return self.norm(x)


def load_text_encoder(factory: str, path: str | None = None) -> TextEncoder:
    """Build a pretrained text encoder with a user's factory, `"package.module:function"`.

    The factory is called with `path` (e.g. a local folder of pretrained weights) and returns a
    TextEncoder: anything taking the byte ids and mask of `encode_texts` to (B, L, dim) features.
    An encoder with its own tokenizer decodes the bytes back to text inside its forward.
    """
    import importlib

    module_name, _, attribute = factory.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"text encoder factory {factory!r} must look like 'package.module:function'")
    build = getattr(importlib.import_module(module_name), attribute)
    encoder = build(path) if path is not None else build()
    if not isinstance(encoder, TextEncoder) or not isinstance(getattr(encoder, "dim", None), int):
        raise TypeError(
            f"{factory} returned {type(encoder).__name__}, not a TextEncoder with an integer `dim`"
        )
    return encoder
