"""LoSATok: a 128-dim, 25 Hz audio tokenizer holding semantics and acoustics in one latent.

Public API:
    LoSATokConfig, official(), tiny(), preset(name)   configuration
    LoSATok, EncodeResult                               the model; encode()/decode()
    load_model, load_published, load_semantic_encoder,
    save_checkpoint, load_checkpoint                    checkpoints
    load_official                                       published weights from the Hugging Face Hub
    collate_waveforms                                   batch waveforms

Decoding input audio (`load_audio`, `AudioError`) is `losatok_input.decoder`'s job; the old
names here still work for one release, with a DeprecationWarning.
"""

from typing import Any

from losatok.audio import collate_waveforms, moved_to_decoder
from losatok.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_published,
    load_semantic_encoder,
    save_checkpoint,
)
from losatok.config import LoSATokConfig, official, preset, tiny
from losatok.hub import load_official
from losatok.loading import load_model
from losatok.model import EncodeResult, LoSATok

__all__ = [
    "CheckpointError",
    "EncodeResult",
    "LoSATok",
    "LoSATokConfig",
    "collate_waveforms",
    "load_checkpoint",
    "load_model",
    "load_official",
    "load_published",
    "load_semantic_encoder",
    "official",
    "preset",
    "save_checkpoint",
    "tiny",
]


def __getattr__(name: str) -> Any:
    return moved_to_decoder(__name__, name)  # `load_audio`, `AudioError`: one release, with a warning
