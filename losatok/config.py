"""One configuration type for the whole LoSATok tokenizer, with its two presets.

`official()` reproduces the published 16 kHz / 25 Hz model so that its released checkpoints
load; `tiny()` keeps every rate and every code path but shrinks the widths and depths so a
model is a few MB and runs on a CPU in milliseconds (tests, demos).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def dataclass_from_dict(cls: type[T], values: dict[str, Any], what: str) -> T:
    """Rebuild a config dataclass; unknown keys are an error so a typo never silently falls back to a default."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {what} config keys: {unknown}")
    return cls(**values)


@dataclass(frozen=True)
class LoSATokConfig:
    preset: str = "official"  # name carried into dataset cards and checkpoints

    # --- audio and token grid -------------------------------------------------------------
    sample_rate: int = 16_000  # Hz; the published model is 16 kHz mono
    samples_per_token: int = 640  # 16 000 / 25 Hz: every stream below lands on this grid

    # --- frozen semantic encoder (Dasheng-style audio transformer) --------------------------
    semantic_dim: int = 1280  # high-dim semantic feature width (Dasheng-0.6B)
    semantic_depth: int = 32  # transformer blocks
    # 16 heads of 80 dims as in Dasheng-0.6B; not readable from a checkpoint's shapes, and a
    # wrong value silently changes every output, so it lives here and nowhere else.
    semantic_heads: int = 16
    semantic_mlp_ratio: float = 4.0
    semantic_n_fft: int = 512  # power mel front end: 32 ms window at 16 kHz
    semantic_hop: int = 160  # 10 ms mel frames; 4 frames per token
    semantic_n_mels: int = 64
    semantic_f_max: float = 8000.0  # Nyquist at 16 kHz
    semantic_top_db: float = 120.0  # dB range kept below each item's loudest mel bin
    semantic_chunk_frames: int = 1008  # 10.08 s chunks processed independently (position table length x 4)
    patch_frames: int = 4  # mel frames per token in both patch embeddings (4 x 160 = 640 samples)

    # --- SemBo ------------------------------------------------------------------------------
    latent_dim: int = 128  # low dim: SemBo output, acoustic_low and the VAE latent z
    sembo_hidden: int = 512

    # --- acoustic branch --------------------------------------------------------------------
    acoustic_n_fft: int = 1024
    acoustic_hop: int = 160
    acoustic_n_mels: int = 128

    # --- decoder (upsampler + Vocos backbone + iSTFT head) ------------------------------------
    upsample_factor: int = 2  # 25 Hz latents -> 50 Hz decoder frames
    decoder_dim: int = 1280
    decoder_intermediate: int = 5120
    decoder_depth: int = 12
    istft_n_fft: int = 1280
    istft_hop: int = 320  # 50 Hz frames x 320 = 16 kHz

    # --- VAE --------------------------------------------------------------------------------
    logvar_clamp: float = 20.0  # logvar is clamped to [-20, 20] as in the published model

    def __post_init__(self) -> None:
        if self.semantic_hop * self.patch_frames != self.samples_per_token:
            raise ValueError(
                f"semantic_hop x patch_frames = {self.semantic_hop * self.patch_frames} must equal "
                f"samples_per_token = {self.samples_per_token}"
            )
        if self.acoustic_hop * self.patch_frames != self.samples_per_token:
            raise ValueError("acoustic_hop x patch_frames must equal samples_per_token")
        if self.istft_hop * self.upsample_factor != self.samples_per_token:
            raise ValueError("istft_hop x upsample_factor must equal samples_per_token")
        if self.semantic_dim % self.semantic_heads:
            raise ValueError(
                f"semantic_dim {self.semantic_dim} is not divisible by {self.semantic_heads} heads"
            )
        if self.semantic_chunk_frames % self.patch_frames:
            raise ValueError("semantic_chunk_frames must be a multiple of patch_frames")

    @property
    def frame_rate(self) -> float:
        """Latent frames per second (25.0 for the published model)."""
        return self.sample_rate / self.samples_per_token

    @property
    def chunk_tokens(self) -> int:
        """Length of the semantic encoder's time position table (252 for 1008 frames)."""
        return self.semantic_chunk_frames // self.patch_frames

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LoSATokConfig:
        return dataclass_from_dict(cls, values, "LoSATok")

    def config_hash(self) -> str:
        """Stable SHA-256 of every field; two configs that build different models never share it."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def official() -> LoSATokConfig:
    """The published 16 kHz / 25 Hz LoSATok (DESIGN.md section 1.1)."""
    return LoSATokConfig()


def tiny() -> LoSATokConfig:
    """Same code, same rates, small widths: about 1 MB of weights, for tests and demos."""
    return LoSATokConfig(
        preset="tiny",
        semantic_dim=64,
        semantic_depth=2,
        semantic_heads=4,
        latent_dim=16,
        sembo_hidden=32,
        decoder_dim=64,
        decoder_intermediate=128,
        decoder_depth=2,
    )


PRESETS = {"official": official, "tiny": tiny}


def preset(name: str) -> LoSATokConfig:
    """Look up a preset by name; the error lists the known ones."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown LoSATok preset {name!r}; known presets: {sorted(PRESETS)}") from None
