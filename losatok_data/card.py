"""The dataset card (`card.json`): what a latent dataset is, in one small JSON file.

It names the schema version, the tokenizer that made the latents (so latents from two
different tokenizers are never mixed), rates, the fields with dtypes and shapes, totals,
per-channel latent stats for DiT normalisation, failure counts and provenance. Readers check
the version before anything else, so a card from a newer major version is refused with a
clear message rather than misread.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any

from losatok_data.errors import SchemaError
from losatok_data.fields import FieldSet, FieldSpec, default_fields
from losatok_data.layout import DatasetLayout
from losatok_data.stats import ChannelStats
from losatok_data.versioning import SCHEMA_VERSION, check_version
from losatok_storage.filesystem import open_atomic, url_to_fs

CARD_KIND = "losatok-latent-dataset"
_NUMBER_LIST = re.compile(r"\[\s+([-+0-9.eE,\s]+?)\s+\]")


@dataclass(frozen=True)
class TokenizerIdentity:
    """Which tokenizer wrote the latents; two datasets are compatible only if these agree."""

    preset: str  # "official", "tiny", ...
    config_hash: str  # sha256 of the model config's canonical JSON (see hash_config)
    checkpoint_sha256: str | None = None  # None: an untrained, seeded model (tests)
    semantic_encoder_sha256: str | None = None  # a separately loaded semantic encoder file
    checkpoint_source: str | None = None  # where published weights came from: hf://repo/file@commit


@dataclass(frozen=True)
class Totals:
    """Sizes of the committed dataset (index fragments and their tars)."""

    samples: int = 0
    frames: int = 0  # latent frames over all samples
    hours: float = 0.0  # audio covered, sum of sample durations / 3600
    shards: int = 0  # committed shards
    bytes: int = 0  # bytes of the committed shards' tars, all field groups
    bytes_by_group: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class GenerationInfo:
    """One generation of a growing dataset: the inputs one run found new in its source.

    Shards `first_shard .. first_shard + shards - 1` belong to it; a reader pinned to generation
    k sees the shards of generations 1..k (the dataset as it stood when k was complete).
    """

    number: int  # 1, 2, ...
    created_at: str  # UTC, ISO 8601, when its plan was stored
    run_id: str  # the run that planned it
    source: str  # the source path or URI it was listed from
    inputs_listed: int = 0  # inputs the source held at that run
    inputs_new: int = 0  # of them, not yet in the dataset: planned in this generation
    inputs_missing: int = 0  # inputs of earlier generations from this source no longer listed (kept)
    inputs_retried: int = 0  # of inputs_new: failed in an earlier generation, planned again (1.2)
    first_shard: int = 0
    shards: int = 0  # planned
    shards_committed: int = 0  # committed when the card was written
    samples: int = 0  # in its committed shards
    hours: float = 0.0  # of audio in its committed shards

    @property
    def end_shard(self) -> int:
        """One past its last shard number."""
        return self.first_shard + self.shards


@dataclass(frozen=True)
class DatasetCard:
    """Contents of `card.json`. Rates in Hz; totals per `Totals`."""

    tokenizer: TokenizerIdentity
    fields: FieldSet = field(default_factory=default_fields)
    sample_rate: int = 16000  # Hz of the audio given to the tokenizer
    frame_rate: float = 25.0  # latent frames per second (640 samples per frame at 16 kHz)
    totals: Totals = field(default_factory=Totals)
    latent_stats: ChannelStats | None = None  # per-channel stats of the stored `latent` field
    failures: Mapping[str, int] = field(default_factory=dict)  # failed inputs per stage
    created_at: str = field(default_factory=lambda: utc_now())  # when the dataset was first written
    updated_at: str | None = None  # when a run last changed it (None: never since creation)
    software_version: str = field(default_factory=lambda: software_version())
    source: str | None = None  # the corpus it was first made from (every source: `generations`)
    description: str | None = None
    schema_version: str = SCHEMA_VERSION
    generations: tuple[GenerationInfo, ...] = ()  # every append, in order; () for a card without them

    @property
    def failed_inputs(self) -> int:
        return sum(self.failures.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": CARD_KIND,
            "schema_version": self.schema_version,
            "tokenizer": dataclasses.asdict(self.tokenizer),
            "sample_rate": self.sample_rate,
            "frame_rate": self.frame_rate,
            "fields": [s.to_dict() for s in self.fields],
            "totals": {**dataclasses.asdict(self.totals), "bytes_by_group": dict(self.totals.bytes_by_group)},
            "latent_stats": self.latent_stats.to_dict() if self.latent_stats is not None else None,
            "failures": dict(self.failures),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "software_version": self.software_version,
            "source": self.source,
            "description": self.description,
            "generations": [dataclasses.asdict(g) for g in self.generations],
        }

    def to_json(self) -> str:
        """Indented JSON, with lists of numbers (shapes, 128 means) kept on one line each."""
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        return (
            _NUMBER_LIST.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)
            + "\n"
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "dataset card") -> DatasetCard:
        """Parse a card, checking its version first; keys of a newer minor are ignored."""
        if not isinstance(data, Mapping):
            raise SchemaError(f"{where} is not a JSON object")
        check_version(data.get("schema_version"), where)
        try:
            totals = dict(data.get("totals") or {})
            known = {f.name for f in dataclasses.fields(Totals)}
            return cls(
                schema_version=data["schema_version"],
                tokenizer=TokenizerIdentity(
                    **{k: v for k, v in data["tokenizer"].items() if k in _names(TokenizerIdentity)}
                ),
                fields=FieldSet(tuple(FieldSpec.from_dict(f) for f in data["fields"])),
                sample_rate=int(data["sample_rate"]),
                frame_rate=float(data["frame_rate"]),
                totals=Totals(**{k: v for k, v in totals.items() if k in known}),
                latent_stats=ChannelStats.from_dict(data["latent_stats"])
                if data.get("latent_stats")
                else None,
                failures={str(k): int(v) for k, v in (data.get("failures") or {}).items()},
                created_at=data.get("created_at", ""),
                updated_at=data.get("updated_at"),
                software_version=data.get("software_version", "unknown"),
                source=data.get("source"),
                description=data.get("description"),
                generations=tuple(
                    GenerationInfo(**{k: v for k, v in g.items() if k in _names(GenerationInfo)})
                    for g in data.get("generations") or ()
                ),
            )
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, SchemaError):
                raise
            raise SchemaError(f"{where} is malformed: {type(error).__name__}: {error}") from None

    @classmethod
    def from_json(cls, text: str, where: str = "dataset card") -> DatasetCard:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise SchemaError(f"{where} is not valid JSON: {error}") from None
        return cls.from_dict(data, where)


def read_card(layout: DatasetLayout) -> DatasetCard:
    """The card of a dataset; FileNotFoundError if it has none, SchemaVersionError if too new."""
    text = layout.fs.cat_file(layout.card_path).decode("utf-8")  # one read, retried whole
    return DatasetCard.from_json(text, where=f"dataset card {layout.url_of(layout.card_path)}")


def write_card(layout: DatasetLayout, card: DatasetCard) -> str:
    """Write `card.json` atomically (replacing an earlier one); returns its path."""
    with open_atomic(layout.fs, layout.card_path) as f:
        f.write(card.to_json().encode("utf-8"))
    return layout.card_path


def hash_config(config: Any) -> str:
    """sha256 hex of a config's canonical JSON (a dataclass or a mapping of JSON values)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(url: str, storage_options: Mapping[str, Any] | None = None, chunk: int = 1 << 22) -> str:
    """sha256 hex of a file (e.g. a checkpoint), read in 4 MiB chunks."""
    fs, path = url_to_fs(url, storage_options)
    digest = hashlib.sha256()
    with fs.open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def software_version() -> str:
    """Installed version of this project, or "unknown" when run from a bare checkout."""
    try:
        return importlib_metadata.version("losatok-pipelines")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def _names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}
