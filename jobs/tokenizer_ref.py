"""The tokenizer that made a latent dataset: recorded in DiT checkpoints, rebuilt for generation.

A DiT learns the latent space of one tokenizer; decoding its samples with any other gives noise.
The dataset card names that tokenizer (preset, config hash, checkpoint sha256) and the
pipeline's run record adds the seed that initialised an untrained one. The DiT trainer stores
all of it, plus the full config and the checkpoint path when it is told one, so that
`losatok-generate --dit RUN` rebuilds exactly the model the pipeline used, with no flag.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

import torch

from losatok import LoSATok, load_model, preset
from losatok.checkpoint import checkpoint_config
from losatok.config import PRESETS, LoSATokConfig
from losatok_data.card import sha256_file
from losatok_data.reader import DatasetReader

# Written by the pipeline beside card.json (pipelines.plan.RUN_FILE); jobs never import pipelines,
# so the name is repeated here. It holds the seed of an untrained tokenizer.
RUN_RECORD = "run.json"


@dataclass
class TokenizerSource:
    """Where the dataset's tokenizer file is, for a dataset made from a checkpoint: the card keeps
    only its sha256, so generation can find it only if training is told the path."""

    checkpoint: str | None = None  # must be the file whose sha256 the card records
    semantic_encoder: str | None = None  # a semantic_encoder.pth the pipeline loaded over the encoder


def dataset_tokenizer(reader: DatasetReader, source: TokenizerSource | None = None) -> dict[str, Any]:
    """The record of the dataset's tokenizer that a DiT checkpoint stores (plain JSON values).

    Keys: preset, config (a LoSATokConfig dict, or None when no preset or file gives one whose
    hash matches the card), config_hash, seed (of an untrained model), checkpoint (path or None),
    checkpoint_sha256, semantic_encoder, semantic_encoder_sha256.
    Raises ValueError when `source` names a file other than the one that made the dataset.
    """
    source = source or TokenizerSource()
    card = reader.card.tokenizer
    for path, want, name in (
        (source.checkpoint, card.checkpoint_sha256, "tokenizer.checkpoint"),
        (source.semantic_encoder, card.semantic_encoder_sha256, "tokenizer.semantic_encoder"),
    ):
        if path is not None:
            got = sha256_file(path)
            if got != want:
                raise ValueError(
                    f"{name}={path} has sha256 {got[:12]}..., but {reader.layout.url} was made with "
                    f"{(want or 'no file (an untrained model)')[:12]}...: name the file that made the dataset"
                )
    config = checkpoint_config(source.checkpoint) if source.checkpoint else None
    if config is None and card.preset in PRESETS:
        config = preset(card.preset)
    matches = config is not None and config.config_hash() == card.config_hash
    return {
        "preset": card.preset,
        "config": config.to_dict() if matches else None,
        "config_hash": card.config_hash,
        "seed": recorded_seed(reader),
        "checkpoint": source.checkpoint,
        "checkpoint_sha256": card.checkpoint_sha256,
        "semantic_encoder": source.semantic_encoder,
        "semantic_encoder_sha256": card.semantic_encoder_sha256,
    }


def recorded_seed(reader: DatasetReader) -> int | None:
    """The seed the pipeline initialised its untrained tokenizer with (None with a checkpoint)."""
    seed = getattr(reader.card.tokenizer, "seed", None)  # a card that records it wins
    if seed is not None:
        return int(seed)
    path = reader.layout.path(RUN_RECORD)
    if not reader.layout.fs.exists(path):
        return None
    seed = json.loads(reader.layout.fs.cat_file(path)).get("seed")
    return None if seed is None else int(seed)


def build_tokenizer(
    record: dict[str, Any] | None, checkpoint: str | None = None, preset_name: str | None = None
) -> tuple[LoSATok, bool]:
    """(tokenizer, trained) to decode a DiT's latents with.

    - `checkpoint` (or the recorded path): that file; ours carries its config, a published one
      takes `preset_name`, else the recorded config, else the official one;
    - otherwise the recorded untrained model, initialised with the recorded seed exactly as the
      pipeline's `build_model` does (torch.manual_seed, then the model);
    - `preset_name` without a checkpoint: an untrained model of that preset (same seed).
    Raises ValueError when nothing says which tokenizer to use.
    """
    record = record or {}
    path = checkpoint or record.get("checkpoint")
    semantic = record.get("semantic_encoder") if not checkpoint else None
    recorded = LoSATokConfig.from_dict(record["config"]) if record.get("config") else None
    config = preset(preset_name) if preset_name else recorded
    if path:
        return load_model(path, config, semantic), True
    if record.get("checkpoint_sha256") and not preset_name:
        raise ValueError(
            f"the DiT was trained on latents of the tokenizer checkpoint with sha256 "
            f"{record['checkpoint_sha256'][:12]}...; pass it with --tokenizer PATH"
        )
    if config is None:
        raise ValueError(
            "the DiT checkpoint does not say which tokenizer made its data "
            "(trained before tokenizers were recorded?); pass --tokenizer PATH or --preset NAME"
        )
    torch.manual_seed(record.get("seed") or 0)  # as pipelines.encode.build_model: seed, then build
    return load_model(None, config, record.get("semantic_encoder")), False


def check_tokenizer(model: LoSATok, record: dict[str, Any] | None) -> str | None:
    """A warning when `model` is not the tokenizer that made the DiT's data (None when it is)."""
    if not record or not record.get("config_hash"):
        return None
    if model.config.config_hash() != record["config_hash"]:
        return (
            f"this tokenizer ({model.config.preset}, config {model.config.config_hash()[:12]}...) is not the "
            f"one that made the DiT's training data ({record['preset']}, config {record['config_hash'][:12]}...)"
        )
    return None


def warn(message: str) -> None:
    print(f"WARNING: {message}", file=sys.stderr)
