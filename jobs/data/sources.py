"""The datasets a run reads, opened and checked: one model, one tokenizer, one normalisation.

Each dataset is opened once (card and per-shard summaries, never its whole index); the
checks refuse, naming both sides, a dataset of another schema major, latent width, semantic
width or tokenizer, and a filter on audio measures of a dataset written before them (schema
1.3). Filters are evaluated here on the index rows of the shards a rank reads.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.data.config import DatasetSpec, Filters, LoaderConfig
from jobs.data.plan import Catalog
from losatok_data.reader import DatasetReader, open_dataset
from losatok_data.stats import ChannelStats
from losatok_data.versioning import SCHEMA_VERSION, parse_version
from losatok_storage.cache import FileCache
from losatok_storage.filesystem import url_to_fs
from losatok_storage.retry import RetryPolicy

log = logging.getLogger(__name__)

MEASURES_SINCE = (1, 3)  # the schema version whose samples carry audio measures (rms_db, ...)


class DatasetMismatchError(ValueError):
    """The data cannot feed this model or this run (latent width, tokenizer, schema, a resume)."""


@dataclass
class Source:
    """One opened dataset of the run."""

    spec: DatasetSpec
    reader: DatasetReader
    name: str
    mean: np.ndarray | None  # (C,) float32 used to normalise its latents; None: not normalised
    std: np.ndarray | None
    keys: frozenset[str] | None  # the keys a key filter keeps (None: no such filter)
    excluded: frozenset[str] | None  # the keys a key filter drops
    unmeasured: set[str] = field(default_factory=set)  # measure columns found null (warned once each)

    def catalog(self) -> Catalog:
        """Its shards with samples (from the summaries), in shard order."""
        shards = [s for s in self.reader.shards() if s.samples > 0]
        if self.spec.shards is not None:
            wanted = set(self.spec.shards)
            shards = [s for s in shards if s.number in wanted]
        return Catalog(
            shards=np.asarray([s.number for s in shards], np.int64),
            samples=np.asarray([s.samples for s in shards], np.int64),
            seconds=np.asarray([s.seconds for s in shards], np.float64),
        )

    def columns(self) -> list[str]:
        """Index columns the plan reads: lengths, and what the filters look at."""
        f = self.spec.filters
        wanted = ["frame_count"]
        wanted += ["duration"] if f.min_seconds is not None or f.max_seconds is not None else []
        wanted += ["language"] if f.languages is not None else []
        wanted += ["split"] if f.splits is not None else []
        wanted += ["source"] if f.source_contains else []
        wanted += ["text", "caption"] if f.has_text else []
        wanted += ["key"] if self.keys is not None or self.excluded is not None else []
        wanted += list(dict.fromkeys(column for _, column, _, _ in f.measure_bounds()))
        return wanted

    def kept(self, rows: pa.Table) -> np.ndarray:
        """bool per index row: whether the filters keep it."""
        f, keep = self.spec.filters, np.ones(rows.num_rows, bool)
        if f.min_seconds is not None:
            keep &= rows.column("duration").to_numpy() >= f.min_seconds
        if f.max_seconds is not None:
            keep &= rows.column("duration").to_numpy() <= f.max_seconds
        for column, values in (("language", f.languages), ("split", f.splits)):
            if values is not None:
                keep &= _true(pc.is_in(rows.column(column), pa.array(list(values), pa.string())))
        if f.source_contains:
            keep &= _true(pc.match_substring(rows.column("source"), f.source_contains))
        if f.has_text:
            text = pc.or_kleene(_nonempty(rows.column("text")), _nonempty(rows.column("caption")))
            keep &= _true(text)
        if self.keys is not None:
            keep &= _true(pc.is_in(rows.column("key"), pa.array(sorted(self.keys), pa.string())))
        if self.excluded is not None:
            keep &= ~_true(pc.is_in(rows.column("key"), pa.array(sorted(self.excluded), pa.string())))
        for name, column, kind, bound in f.measure_bounds():
            values = rows.column(column)
            keep &= _true((pc.greater_equal if kind == "min" else pc.less_equal)(values, bound))
            missing = values.null_count
            if missing and column not in self.unmeasured:
                self.unmeasured.add(column)
                log.warning(
                    "%s: %d of %d samples read for this plan have no %s value (rows written before "
                    "schema 1.3, not measured, or undefined for that audio); filters.%s leaves them out",
                    self.spec.path,
                    missing,
                    rows.num_rows,
                    column,
                    name,
                )
        return keep


def _true(values: Any) -> np.ndarray:
    """A boolean column as numpy, null read as False."""
    return pc.fill_null(values, False).to_numpy(zero_copy_only=False).astype(bool)


def _nonempty(column: Any) -> Any:
    return pc.and_kleene(pc.is_valid(column), pc.greater(pc.utf8_length(column), 0))


def open_sources(
    config: LoaderConfig,
    latent_dim: int,
    semantic_dim: int | None = None,
    retry: RetryPolicy | None = None,
    cache: FileCache | None = None,
) -> list[Source]:
    """Every dataset of `config`, opened and checked against the model and each other; remote
    ones read their tars through `cache` when given."""
    specs = config.specs()
    if not specs or any(not s.path for s in specs):
        raise DatasetMismatchError("data: name a dataset (data.path, or data.datasets with a path each)")
    readers = [_open_checked(spec, config, latent_dim, semantic_dim, retry, cache) for spec in specs]
    first = readers[0]
    for spec, reader in zip(specs[1:], readers[1:]):
        a, b = _tokenizer(first), _tokenizer(reader)
        if a != b:
            raise DatasetMismatchError(
                f"{spec.path} was made by tokenizer {b}, {specs[0].path} by {a}: "
                "a run's datasets must share the tokenizer"
            )
    names = [spec.name or spec.path.rstrip("/").rsplit("/", 1)[-1] for spec in specs]
    if len(set(names)) != len(names):  # two datasets of one name: number them
        names = [f"{n}#{i}" for i, n in enumerate(names)]
    stats = _normalisation(config, specs, readers)
    return [
        Source(spec, reader, name, *pair, *_key_lists(spec.filters, spec.storage_options))
        for spec, reader, name, pair in zip(specs, readers, names, stats, strict=True)
    ]


def _tokenizer(reader: DatasetReader) -> str:
    t = reader.card.tokenizer
    return f"{t.preset} (config {t.config_hash[:12]}, weights {(t.checkpoint_sha256 or 'untrained')[:12]})"


def _open_checked(
    spec: DatasetSpec,
    config: LoaderConfig,
    latent_dim: int,
    semantic_dim: int | None,
    retry: RetryPolicy | None,
    cache: FileCache | None,
) -> DatasetReader:
    """Open one dataset and refuse, saying both sides, one this model cannot train on."""
    if spec.weight <= 0:
        raise DatasetMismatchError(f"{spec.path}: weight {spec.weight} must be above 0")
    try:
        reader = open_dataset(
            spec.path, spec.storage_options, spec.generation, retry, cache
        )  # refuses newer majors
    except FileNotFoundError:
        raise DatasetMismatchError(
            f"data.path={spec.path}: no latent dataset there (no card.json); losatok-tokenize makes one"
        ) from None
    card = reader.card
    if parse_version(card.schema_version)[0] != parse_version(SCHEMA_VERSION)[0]:
        raise DatasetMismatchError(
            f"{spec.path} has schema version {card.schema_version}; this trainer reads {SCHEMA_VERSION}"
        )
    width = card.fields["latent"].frame_shape[0]
    if width != latent_dim:
        raise DatasetMismatchError(
            f"{spec.path} holds latents of dimension {width} (tokenizer {card.tokenizer.preset}); "
            f"the model expects latent_dim {latent_dim}"
        )
    if config.semantic_field:
        if config.semantic_field not in card.fields:
            raise DatasetMismatchError(
                f"{spec.path} has no {config.semantic_field!r} field for the semantic loss; "
                f"its fields are {card.fields.names()}"
            )
        got = card.fields[config.semantic_field].frame_shape[0]
        if semantic_dim is not None and got != semantic_dim:
            raise DatasetMismatchError(
                f"{spec.path} field {config.semantic_field} has dimension {got}; the model's semantic head has {semantic_dim}"
            )
    if config.normalize and card.latent_stats is None:
        raise DatasetMismatchError(f"{spec.path} has no latent statistics in its card to normalise with")
    bounds = spec.filters.measure_bounds()
    if bounds and parse_version(card.schema_version) < MEASURES_SINCE:
        name, column, _, _ = bounds[0]
        raise DatasetMismatchError(
            f"{spec.path} has no {column} measures: written before schema 1.3 (its card: "
            f"{card.schema_version}), so filters.{name} would keep no sample; drop the filter or "
            "tokenize the data again"
        )
    return reader


def _normalisation(
    config: LoaderConfig, specs: Sequence[DatasetSpec], readers: Sequence[DatasetReader]
) -> list[tuple[np.ndarray | None, np.ndarray | None]]:
    """(mean, std) per dataset: none, each card's own, or one pooled over the mixture."""
    if not config.normalize:
        return [(None, None)] * len(readers)
    if config.stats not in ("pooled", "per_dataset"):
        raise DatasetMismatchError(f"data.stats={config.stats!r}: pooled or per_dataset")
    cards = [r.card.latent_stats for r in readers]
    if config.stats == "pooled" and len(cards) > 1:
        # frames x weight: the mixture as the model sees it
        pooled = ChannelStats.merge_all(_scaled(s, spec.weight) for s, spec in zip(cards, specs))
        cards = [pooled] * len(cards)
    return [(np.asarray(s.mean, np.float32), np.asarray(s.std, np.float32).clip(min=1e-5)) for s in cards]


def _scaled(stats: ChannelStats, weight: float) -> ChannelStats:
    """The stats of `stats`'s frames seen `weight` times (count and M2 scale, the mean stays)."""
    return dataclasses.replace(stats, count=stats.count * weight, m2=stats.m2 * weight)


def _key_lists(
    filters: Filters, storage_options: dict[str, Any]
) -> tuple[frozenset[str] | None, frozenset[str] | None]:
    keep = set(filters.keys) if filters.keys is not None else None
    if filters.keys_file:
        keep = (keep or set()) | _read_keys(filters.keys_file, storage_options)
    drop = _read_keys(filters.exclude_keys_file, storage_options) if filters.exclude_keys_file else None
    return (frozenset(keep) if keep is not None else None), (frozenset(drop) if drop is not None else None)


def _read_keys(path: str, storage_options: dict[str, Any]) -> set[str]:
    fs, root = url_to_fs(path, storage_options)
    try:
        text = fs.cat_file(root).decode()
    except FileNotFoundError:
        raise DatasetMismatchError(f"key list {path}: no such file") from None
    return {line.strip() for line in text.splitlines() if line.strip()}
