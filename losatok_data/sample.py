"""One sample of a latent dataset, and its encoding as WebDataset tar members.

A sample is stored under one `__key__` as members `<key>.<field>.npy` (one per array field)
and `<key>.json` (metadata). Every array is (T, *frame_shape) with the same T, the frame
count the metadata states. `.npy` members are read with `allow_pickle=False`: a shard is
data, never code.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from losatok_data.errors import SampleValidationError
from losatok_data.fields import LATENT_GROUP, METADATA_MEMBER, FieldSet, FieldSpec, as_field_set

# WebDataset splits a member name at the first dot of its base name, and keys become file
# names in tars and indexes: letters, digits, '-' and '_' only keep them safe everywhere.
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,160}$")
# The encoder gives floor((samples // hop + 1) / 4) frames for a span, so the stated duration
# times the frame rate lies within one frame of the frame count.
FRAME_TOLERANCE = 1.0


@dataclass(frozen=True)
class SampleMetadata:
    """The `json` member of a sample. Times in seconds, rates in Hz."""

    source: str  # location of the audio file it came from
    offset: float  # seconds into the source where the sample starts
    duration: float  # seconds of audio the sample covers
    sample_rate: int  # Hz of the audio the tokenizer saw (16000 for the official model)
    frame_count: int  # T, the number of latent frames
    id: str | None = None  # carried through from the manifest
    text: str | None = None
    caption: str | None = None
    language: str | None = None
    speaker: str | None = None
    tags: tuple[str, ...] | None = None
    split: str | None = None
    extra: Mapping[str, Any] | None = None
    segment: int | None = None  # index of this span when a long input was cut into several
    # measures of the audio the tokenizer saw (16 kHz mono), schema 1.3 on; None before, or when
    # the writer did not measure (definitions: `pipelines.measures`)
    rms_db: float | None = None  # RMS level, dBFS (a full-scale sine is -3.01), floored for silence
    peak: float | None = None  # max |x|, linear
    clipped_fraction: float | None = None  # of samples at full scale
    silent_fraction: float | None = None  # of 20 ms frames below the silence level (digital silence: 1.0)
    content_hash: str | None = None  # hex digest of the decoded samples: equal audio, equal hash
    loudness_lufs: float | None = None  # integrated loudness (ITU-R BS.1770); None when undefined

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; None values are left out (they read back as None)."""
        out = {k: v for k, v in asdict(self).items() if v is not None}
        if self.tags is not None:
            out["tags"] = list(self.tags)
        if self.extra is not None:
            out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SampleMetadata:
        """Inverse of to_dict; keys this version does not know (a newer minor's) are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("tags") is not None:
            values["tags"] = tuple(values["tags"])
        return cls(**values)


@dataclass(frozen=True)
class LatentSample:
    """A sample: its key, metadata, and arrays by field name, each (T, *frame_shape)."""

    key: str
    metadata: SampleMetadata
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def latent(self) -> np.ndarray:
        """(T, latent_dim) posterior mean."""
        return self.arrays["latent"]

    @property
    def logvar(self) -> np.ndarray | None:
        return self.arrays.get("logvar")

    @property
    def semantic_low(self) -> np.ndarray | None:
        return self.arrays.get("semantic_low")

    @property
    def semantic(self) -> np.ndarray | None:
        return self.arrays.get("semantic")

    @property
    def frame_count(self) -> int:
        return self.metadata.frame_count


def encode_npy(array: np.ndarray) -> bytes:
    """The `.npy` bytes of an array (C order, no pickle)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def decode_npy(data: bytes) -> np.ndarray:
    """An array from `.npy` bytes; object arrays (which need pickle) are refused."""
    return np.load(io.BytesIO(data), allow_pickle=False)


def encode_sample(
    sample: LatentSample,
    fields: FieldSet | Iterable[FieldSpec] | None = None,
    frame_rate: float | None = None,
    groups: Iterable[str] | None = None,
) -> dict[str, Any]:
    """WebDataset members of a sample: `{"__key__": key, "latent.npy": bytes, ..., "json": bytes}`.

    Arrays are cast to their field's storage dtype (e.g. float32 model output to float16)
    and then validated, so an overflow to inf in the cast is caught here, not in training.
    `groups` whose required fields must be present default to every group of `fields`.
    """
    specs = as_field_set(fields)
    arrays = {}
    for name, array in sample.arrays.items():
        spec = _spec(specs, sample.key, name)
        with np.errstate(over="ignore"):  # an overflow becomes inf, which validation reports by field
            arrays[name] = np.asarray(array).astype(spec.dtype, copy=False)
    cast = LatentSample(sample.key, sample.metadata, arrays)
    validate_sample(cast, specs, frame_rate=frame_rate, groups=specs.groups() if groups is None else groups)
    members: dict[str, Any] = {"__key__": sample.key}
    for name, array in arrays.items():
        members[specs[name].member] = encode_npy(array)
    members[METADATA_MEMBER] = json.dumps(
        sample.metadata.to_dict(), ensure_ascii=False, sort_keys=True, allow_nan=False
    ).encode("utf-8")
    return members


def decode_sample(
    members: Mapping[str, Any],
    fields: FieldSet | Iterable[FieldSpec] | None = None,
    frame_rate: float | None = None,
    groups: Iterable[str] | None = None,
) -> LatentSample:
    """A validated LatentSample from WebDataset members (as encode_sample makes them).

    `groups` are the field groups whose required fields must be present; by default the
    latent group and any group with a member present. Members starting with "__" (e.g.
    `__url__`) are ignored; any other unknown member is an error.
    """
    specs = as_field_set(fields)
    key = members.get("__key__")
    if not isinstance(key, str):
        raise SampleValidationError(None, "__key__", f"missing or not a string: {key!r}")
    if METADATA_MEMBER not in members:
        raise SampleValidationError(key, METADATA_MEMBER, "missing")
    try:
        raw = members[METADATA_MEMBER]
        metadata = SampleMetadata.from_dict(
            json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        )
    except (ValueError, TypeError, AttributeError) as error:
        raise SampleValidationError(key, METADATA_MEMBER, f"not valid metadata: {error}") from None
    arrays = {}
    for member, data in members.items():
        if member.startswith("__") or member == METADATA_MEMBER:
            continue
        spec = specs.by_member(member)
        if spec is None:
            raise SampleValidationError(key, member, f"unexpected member; fields are {specs.names()}")
        try:
            arrays[spec.name] = decode_npy(data)
        except (ValueError, OSError, EOFError) as error:
            raise SampleValidationError(
                key, spec.name, f"not a readable .npy without pickle: {error}"
            ) from None
    wanted = set(groups) if groups is not None else {LATENT_GROUP} | {specs[n].group for n in arrays}
    sample = LatentSample(key, metadata, arrays)
    validate_sample(sample, specs, frame_rate=frame_rate, groups=wanted)
    return sample


def validate_sample(
    sample: LatentSample,
    fields: FieldSet | Iterable[FieldSpec] | None = None,
    frame_rate: float | None = None,
    groups: Iterable[str] = (LATENT_GROUP,),
) -> None:
    """Raise SampleValidationError unless the sample meets its field specs.

    Checks: the key is tar-safe; required fields of `groups` are present and no unknown
    field is; each array has its field's exact dtype and shape (T, *frame_shape) with the
    same T >= 1 as `metadata.frame_count`; values are finite; times are sane; and, given
    `frame_rate` (Hz), duration x frame_rate is within one frame of T.
    """
    specs = as_field_set(fields)
    key, meta = sample.key, sample.metadata
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise SampleValidationError(key, "__key__", "must be 1-160 characters of letters, digits, '-' or '_'")
    groups = set(groups)
    for spec in specs:
        if spec.group in groups and spec.required and spec.name not in sample.arrays:
            raise SampleValidationError(key, spec.name, f"required field missing (group {spec.group!r})")
    _validate_metadata(key, meta, frame_rate)
    for name, array in sample.arrays.items():
        spec = _spec(specs, key, name)
        if array.dtype != np.dtype(spec.dtype):
            raise SampleValidationError(key, name, f"dtype {array.dtype} is not the field's {spec.dtype}")
        expected = (meta.frame_count, *spec.frame_shape)
        if array.shape != expected:
            raise SampleValidationError(
                key,
                name,
                f"shape {array.shape} is not {expected} (frame_count {meta.frame_count}, frame shape)",
            )
        if not np.isfinite(array).all():
            raise SampleValidationError(
                key, name, f"{int((~np.isfinite(array)).sum())} values are NaN or inf"
            )


def _validate_metadata(key: str, meta: SampleMetadata, frame_rate: float | None) -> None:
    if not isinstance(meta.frame_count, int) or isinstance(meta.frame_count, bool) or meta.frame_count < 1:
        raise SampleValidationError(
            key, "json.frame_count", f"must be an integer >= 1, got {meta.frame_count!r}"
        )
    for name in ("offset", "duration"):
        value = getattr(meta, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise SampleValidationError(key, f"json.{name}", f"must be finite seconds, got {value!r}")
    if meta.offset < 0 or meta.duration <= 0:
        raise SampleValidationError(
            key, "json", f"offset {meta.offset} s must be >= 0 and duration {meta.duration} s > 0"
        )
    if not isinstance(meta.sample_rate, int) or meta.sample_rate <= 0:
        raise SampleValidationError(
            key, "json.sample_rate", f"must be a positive integer (Hz), got {meta.sample_rate!r}"
        )
    if not isinstance(meta.source, str) or not meta.source:
        raise SampleValidationError(key, "json.source", "must be the non-empty location of the audio")
    if frame_rate is not None and abs(meta.duration * frame_rate - meta.frame_count) > FRAME_TOLERANCE:
        raise SampleValidationError(
            key,
            "json.frame_count",
            f"{meta.frame_count} frames disagree with {meta.duration} s at {frame_rate} Hz "
            f"({meta.duration * frame_rate:.2f} frames)",
        )


def _spec(specs: FieldSet, key: str, name: str) -> FieldSpec:
    if name not in specs:
        raise SampleValidationError(key, name, f"not a field of this dataset; fields are {specs.names()}")
    return specs[name]
