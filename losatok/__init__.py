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

import importlib
from typing import TYPE_CHECKING, Any

from losatok.config import LoSATokConfig, official, preset, tiny
from losatok.errors import CheckpointError

# The rest imports torch (1.5 s) and is loaded on first use: the pipeline's driver needs the
# configs and the Hub's file names only, and its start-up is counted (bench/vs_loop.py).
_LAZY = {
    "collate_waveforms": "losatok.audio",
    "load_checkpoint": "losatok.checkpoint",
    "load_published": "losatok.checkpoint",
    "load_semantic_encoder": "losatok.checkpoint",
    "save_checkpoint": "losatok.checkpoint",
    "load_official": "losatok.hub",
    "load_model": "losatok.loading",
    "EncodeResult": "losatok.model",
    "LoSATok": "losatok.model",
}
if TYPE_CHECKING:
    from losatok.audio import collate_waveforms
    from losatok.checkpoint import load_checkpoint, load_published, load_semantic_encoder, save_checkpoint
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
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # once: later lookups find it without this hook
        return value
    from losatok.audio import moved_to_decoder

    return moved_to_decoder(__name__, name)  # `load_audio`, `AudioError`: one release, with a warning
