"""Records passed between the pipeline's stages: numpy and stdlib only, so the commit stage
never imports torch (a worker that only writes stays small and starts fast)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


@dataclass
class Segment:
    key: str  # sample key: <input key>_<segment index>
    input_key: str
    location: str
    offset: float  # seconds from the start of the source file
    wav: np.ndarray  # (S,) float32 at the model rate
    sample_rate: int
    metadata: dict[str, Any] = field(default_factory=dict)
    num_samples: int = -1  # len(wav), kept when the audio is dropped

    def __post_init__(self) -> None:
        if self.num_samples < 0:
            self.num_samples = len(self.wav)

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate

    def without_audio(self) -> Segment:
        """The same segment minus its waveform: what the commit stage needs, at a fraction of the bytes."""
        return replace(self, wav=np.empty(0, np.float32))


@dataclass
class EncodedSegment:
    arrays: dict[str, np.ndarray]  # field -> (frames, dim) in the storage dtype
    frames: int


class EncodeFailure(Exception):
    """A segment that could not be encoded (NaN/Inf output, out of memory)."""
