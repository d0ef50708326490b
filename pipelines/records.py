"""Records passed between the pipeline's stages: numpy and stdlib only, so the commit stage
never imports torch (a worker that only writes stays small and starts fast)."""

from __future__ import annotations

import hashlib
import pickle
import struct
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


@dataclass
class Segment:
    key: str  # sample key: <input key>_<segment index>
    input_key: str
    location: str
    offset: float  # seconds from the start of the source file
    wav: np.ndarray  # (S,) at the model rate: float32, or int16 PCM when that is lossless
    sample_rate: int
    metadata: dict[str, Any] = field(default_factory=dict)
    num_samples: int = -1  # len(wav), kept when the audio is dropped
    measures: dict[str, Any] = field(default_factory=dict)  # pipelines.measures.AudioMeasures.as_dict()

    def __post_init__(self) -> None:
        if self.num_samples < 0:
            self.num_samples = len(self.wav)

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate

    def float_wav(self) -> np.ndarray:
        """(S,) float32 in [-1, 1], whichever dtype travelled."""
        return pcm_to_float(self.wav)

    def without_audio(self) -> Segment:
        """The same segment minus its waveform: what the commit stage needs, at a fraction of the bytes."""
        return replace(self, wav=np.empty(0, np.float32))


@dataclass
class EncodedSegment:
    arrays: dict[str, np.ndarray]  # field -> (frames, dim) in the storage dtype
    frames: int


class EncodeFailure(Exception):
    """A segment that could not be encoded (NaN/Inf output, out of memory)."""


@dataclass(frozen=True)
class StageStats:
    """Where and for how long a unit was decoded and encoded; it travels with the unit's payload,
    each stage copying it with its own part filled in."""

    decode_node: str = ""  # Ray node id
    decode_seconds: float = 0.0  # wall time of the decode task's work on this unit
    decode_started_at: float = 0.0  # epoch s: bench/pipeline_feed.py's steady-state window
    skipped: dict[str, Any] = field(default_factory=dict)  # SkippedFiles.to_dict(): tar members not audio
    dropped: dict[str, int] = field(default_factory=dict)  # left out by the decode stage, by reason
    left_out: dict[str, str] = field(default_factory=dict)  # input key -> why it was left out whole
    encode_node: str = ""
    encode_seconds: float = 0.0
    encode_started_at: float = 0.0  # epoch s
    encode_ready_at: float | None = None  # epoch s the encode actor was up; bench/pipeline_feed.py's only


@dataclass(frozen=True)
class UnitSummary:
    """What committing one unit did: its counts, and the stats of the stages it went through.

    A unit that came in windows (`pipelines.commit.ShardCommitter.commit_window`) gives one
    partial row per window (`complete=False`: zero counts, `inputs` 0, that window's `stages`)
    and one complete row (the whole unit's counts, empty `stages`) from a call that assembled
    its shard; two calls may both assemble it, so a reader keeps one complete row per `unit`.
    """

    unit: int  # the unit's (and its shard's) number
    inputs: int  # planned inputs of the unit
    samples: int  # written
    audio_seconds: float  # of the samples written
    failures: int  # failed inputs, by location
    transient: int  # of them, failed because the storage did (retried by the next run)
    bytes: int  # of the unit's tars, every field group
    stages: StageStats = field(default_factory=StageStats)
    complete: bool = True  # a row for the whole committed unit; False: one window's part of it

    @staticmethod
    def to_batch(summaries: list[UnitSummary]) -> dict[str, list[bytes]]:
        """The column batch Ray Data passes on: one row per summary, one pickled column."""
        return {"summary": [pickle.dumps(s, protocol=5) for s in summaries]}

    @staticmethod
    def from_row(row: dict[str, Any]) -> UnitSummary:
        """The summary one row of a `to_batch` batch holds."""
        return pickle.loads(row["summary"])


SILENT, DUPLICATE = "silent_segments", "duplicate_inputs"  # what the decode stage leaves out, by reason


def input_digest(content_hashes: list[str]) -> bytes:
    """16 bytes naming an input's audio: a digest of its segments' `content_hash`es in segment
    order. Equal audio cut the same way gives the same digest (sink.dedup compares these)."""
    return hashlib.blake2b("".join(content_hashes).encode(), digest_size=16).digest()


_INT16_SCALE = 32768.0  # FFmpeg's s16 -> float conversion: x / 2**15


def compact_pcm(wav: np.ndarray, probe: int = 4096) -> np.ndarray:
    """`wav` as int16 when every float32 sample is exactly k / 2**15 (a 16-bit source that needed
    no mixing or resampling, e.g. 16 kHz mono PCM wav), else unchanged: half the bytes through
    Ray's object store, no loss. The first `probe` samples are checked alone first, so a
    resampled input costs almost nothing here."""
    for part in (wav[:probe], wav):
        scaled = part * np.float32(_INT16_SCALE)
        with np.errstate(invalid="ignore"):  # +1.0 does not fit; the comparison below catches it
            pcm = scaled.astype(np.int16)  # truncates: equal to `scaled` only when it held integers
        if not np.array_equal(pcm, scaled):
            return wav
    return pcm


def pcm_to_float(wav: np.ndarray) -> np.ndarray:
    """(S,) float32 from float32 or int16 samples (the inverse of `compact_pcm`)."""
    if wav.dtype == np.int16:
        return wav.astype(np.float32) / np.float32(_INT16_SCALE)
    return wav if wav.flags.writeable else wav.copy()  # torch wants writable memory


def pack_payload(obj: Any) -> bytes:
    """Pickle `obj` with its arrays' bytes out of band, joined into one exactly-sized buffer.

    In-band pickling of large arrays grows its output buffer by copies; this makes one copy of
    each array and is ~8x faster on decode payloads (bench/pipeline_feed.py). Layout: count n
    (uint32), n + 1 lengths (uint64), the pickle stream, the n array buffers.
    """
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    sizes = struct.pack(f"<I{len(raws) + 1}Q", len(raws), len(head), *(r.nbytes for r in raws))
    return b"".join([sizes, head, *raws])


def unpack_payload(blob: bytes) -> Any:
    """The object `pack_payload` packed; its arrays are read-only views into `blob`."""
    view = memoryview(blob)
    (count,) = struct.unpack_from("<I", view)
    sizes = struct.unpack_from(f"<{count + 1}Q", view, 4)
    offset = 4 + 8 * (count + 1)
    parts = []
    for size in sizes:
        parts.append(view[offset : offset + size])
        offset += size
    return pickle.loads(parts[0], buffers=parts[1:])
