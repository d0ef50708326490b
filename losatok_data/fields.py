"""Array fields of a latent sample and the shard set (field group) each one lives in.

The dataset card's list of FieldSpecs is the truth a dataset is validated against, so the
widths are not hard-coded: the defaults describe the official model (latent 128, semantic
1280) and the tiny preset passes its own widths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from losatok_data.errors import SchemaError

LATENT_GROUP = "latent"  # latent, logvar, semantic_low and the json metadata
SEMANTIC_GROUP = "semantic"  # the high-dim semantic targets: 10x the latent's bytes, kept apart
GROUPS = (LATENT_GROUP, SEMANTIC_GROUP)
METADATA_MEMBER = "json"  # the metadata member's extension; always in the latent group

# Storage dtypes a field may use: floats only, since every field is a feature map.
FLOAT_DTYPES = ("float16", "float32", "float64")  # numpy has no bfloat16; .npy cannot hold it


@dataclass(frozen=True)
class FieldSpec:
    """One array field of a sample: stored as `<key>.<name>.npy`, shape (frames, *frame_shape)."""

    name: str  # "latent", "logvar", "semantic_low", "semantic"
    dtype: str = "float16"  # numpy dtype name of the stored array
    frame_shape: tuple[int, ...] = (128,)  # shape of one frame; the array is (T, *frame_shape)
    group: str = LATENT_GROUP  # which shard set holds it
    required: bool = True  # every sample of the dataset has it
    description: str | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise SchemaError(f"field name {self.name!r} must be an identifier (no dots: it is a tar suffix)")
        if self.dtype not in FLOAT_DTYPES:
            raise SchemaError(f"field {self.name!r}: dtype {self.dtype!r} is not one of {FLOAT_DTYPES}")
        if self.group not in GROUPS:
            raise SchemaError(f"field {self.name!r}: group {self.group!r} is not one of {GROUPS}")
        if not self.frame_shape or any(int(d) < 1 for d in self.frame_shape):
            raise SchemaError(f"field {self.name!r}: frame shape {self.frame_shape} must be positive dims")

    @property
    def member(self) -> str:
        """The tar member suffix (WebDataset extension) of this field."""
        return f"{self.name}.npy"

    def bytes_per_frame(self) -> int:
        """Payload bytes of one frame (no .npy header)."""
        return int(np.prod(self.frame_shape)) * np.dtype(self.dtype).itemsize

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "frame_shape": list(self.frame_shape),
            "group": self.group,
            "required": self.required,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: dict) -> FieldSpec:
        return cls(
            name=data["name"],
            dtype=data.get("dtype", "float16"),
            frame_shape=tuple(int(d) for d in data["frame_shape"]),
            group=data.get("group", LATENT_GROUP),
            required=bool(data.get("required", True)),
            description=data.get("description"),
        )


@dataclass(frozen=True)
class FieldSet:
    """The fields of one dataset, by name, with lookups the readers and writers need."""

    specs: tuple[FieldSpec, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = [s.name for s in self.specs]
        if len(set(names)) != len(names):
            raise SchemaError(f"field names repeat: {names}")
        if "latent" not in names:
            raise SchemaError("a latent dataset needs a 'latent' field")
        if self["latent"].group != LATENT_GROUP or not self["latent"].required:
            raise SchemaError("the 'latent' field must be required and in the latent group")

    def __getitem__(self, name: str) -> FieldSpec:
        for spec in self.specs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return any(s.name == name for s in self.specs)

    def __iter__(self):
        return iter(self.specs)

    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def in_group(self, group: str) -> list[FieldSpec]:
        return [s for s in self.specs if s.group == group]

    def groups(self) -> list[str]:
        """Groups that hold at least one field, latent first (it also holds the metadata)."""
        return [g for g in GROUPS if g == LATENT_GROUP or self.in_group(g)]

    def by_member(self, member: str) -> FieldSpec | None:
        return next((s for s in self.specs if s.member == member), None)


def as_field_set(fields: FieldSet | Sequence[FieldSpec] | None) -> FieldSet:
    """Accept a FieldSet, a list of specs, or None (the official defaults)."""
    if fields is None:
        return default_fields()
    if isinstance(fields, FieldSet):
        return fields
    return FieldSet(tuple(fields))


def default_fields(
    latent_dim: int = 128,
    semantic_dim: int = 1280,
    *,
    logvar: bool = False,
    semantic_low: bool = True,
    semantic: bool = False,
    dtype: str = "float16",
) -> FieldSet:
    """Field specs of a dataset written by a tokenizer with these widths.

    Defaults: the official model, posterior mean and the SemBo-compressed semantic target,
    float16 (fp16 halves storage; the latent's range is far inside fp16's).
    """
    specs = [FieldSpec("latent", dtype, (latent_dim,), description="posterior mean mu, (T, latent_dim)")]
    if logvar:
        specs.append(
            FieldSpec("logvar", dtype, (latent_dim,), description="posterior log-variance, (T, latent_dim)")
        )
    if semantic_low:
        specs.append(
            FieldSpec(
                "semantic_low", dtype, (latent_dim,), description="SemBo.down(semantic), (T, latent_dim)"
            )
        )
    if semantic:
        specs.append(
            FieldSpec(
                "semantic",
                dtype,
                (semantic_dim,),
                group=SEMANTIC_GROUP,
                description="frozen semantic encoder output, (T, semantic_dim)",
            )
        )
    return FieldSet(tuple(specs))
