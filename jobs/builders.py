"""Models built the same way by the recipe that trains them and the jobs that load them back."""

from __future__ import annotations

from losatok.dit import DiT, DiTConfig
from losatok.text import load_text_encoder


def build_dit(config: DiTConfig, factory: str | None, path: str | None, freeze: bool = True) -> DiT:
    """The DiT with its default byte-level text encoder, or with a pretrained one from `factory`
    ("package.module:function", called with `path`), frozen unless `freeze` is False."""
    if factory is None:
        return DiT(config)
    encoder = load_text_encoder(factory, path)
    if freeze:
        encoder.requires_grad_(False)
    return DiT(config, text_encoder=encoder)
