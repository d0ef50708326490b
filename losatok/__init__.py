"""LoSATok: a 128-dim, 25 Hz audio tokenizer holding semantics and acoustics in one latent.

Public API:
    LoSATokConfig, official(), tiny(), preset(name)   configuration
    LoSATok, EncodeResult                               the model; encode()/decode()
    load_model, load_published, load_semantic_encoder,
    save_checkpoint, load_checkpoint                    checkpoints
    load_official                                       published weights from the Hugging Face Hub
    load_audio, collate_waveforms, AudioError           audio input
"""

from losatok.audio import AudioError, collate_waveforms, load_audio
from losatok.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    load_published,
    load_semantic_encoder,
    save_checkpoint,
)
from losatok.config import LoSATokConfig, official, preset, tiny
from losatok.hub import load_official
from losatok.model import EncodeResult, LoSATok

__all__ = [
    "AudioError",
    "CheckpointError",
    "EncodeResult",
    "LoSATok",
    "LoSATokConfig",
    "collate_waveforms",
    "load_audio",
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
