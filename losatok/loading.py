"""One entry point for a model from any source (`load_model`): our checkpoint, a published file,
the published weights on the Hugging Face Hub, or an untrained preset. It sits above both
`losatok.checkpoint` (files) and `losatok.hub` (the Hub), which know nothing of each other's
callers."""

from __future__ import annotations

import os
from collections.abc import Mapping

from losatok.checkpoint import (
    FORMAT,
    load_checkpoint,
    load_into,
    read_payload,
    ready_for_use,
    unwrap_state_dict,
)
from losatok.config import LoSATokConfig, official
from losatok.hub import load_official
from losatok.model import LoSATok


def load_model(
    path: str | os.PathLike | None,
    config: LoSATokConfig | None = None,
    semantic_encoder_path: str | os.PathLike | None = None,
    *,
    variant: str | None = None,
    revision: str | None = None,
) -> LoSATok:
    """One entry point for every source: our checkpoint (config inside), a published file
    (config from `config`, default official), or nothing: for the official preset the published
    weights (`variant` kl1e-3 or kl1e-2, at `revision`) from the Hugging Face Hub or its cache
    (`losatok.hub`), for any other preset an untrained model of `config`."""
    if path is None:
        config = config or official()
        if config.preset == "official":  # the only preset with published weights
            return load_official(config, variant, revision, semantic_encoder_path)
        return ready_for_use(LoSATok(config), semantic_encoder_path)
    payload = read_payload(path)  # read once: official checkpoints are gigabytes
    if isinstance(payload, Mapping) and payload.get("format") == FORMAT:
        return ready_for_use(load_checkpoint(path, payload=payload), semantic_encoder_path)
    model = LoSATok(config or official())
    load_into(model, unwrap_state_dict(payload, path), source=str(path))
    return ready_for_use(model, semantic_encoder_path)
