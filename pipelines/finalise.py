"""The dataset as the driver keeps it around a run: open it, clear what a killed run left, name
the failed inputs to plan again; afterwards record recoveries, rebuild the card from what is
committed, count inputs and log the run. Units themselves commit in `pipelines.commit`.

Beyond the `losatok_data` layout (which includes `stats/shard-*.json`, per-shard latent
statistics merged into the card) the pipeline keeps small files of its own at the root:
`run.json` (what wrote this dataset: tokenizer, fields, segmentation), `plan/` and
`generations/` (which inputs make which shard, one generation per append; see
`pipelines.plan`), `lease.json` (the one run writing now; see `pipelines.lease`) and
`runs/run-*.json` (one log per run: counts, nodes, speed).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from losatok_data.card import (
    DatasetCard,
    GenerationInfo,
    TokenizerIdentity,
    Totals,
    read_card,
    utc_now,
    write_card,
)
from losatok_data.fields import FieldSet, default_fields
from losatok_data.index import ShardInfo, shard_summaries
from losatok_data.layout import STATS_DIR, DatasetLayout, shard_name
from losatok_data.ledger import (
    failure_counts,
    open_failures,
    read_failures,
    recovered_records,
    write_failures,
)
from losatok_data.reader import DatasetReader
from losatok_data.stats import ChannelStats, read_stats_fragment, write_stats_fragment
from losatok_storage.filesystem import open_atomic
from losatok_storage.retry import RetryPolicy
from losatok_storage.secrets import redact, redact_text
from pipelines.commit import ShardCommitter
from pipelines.config import FieldsConfig, SinkConfig
from pipelines.plan import (
    Generation,
    PlanStore,
    RunIdentity,
    UnitRef,
    key_hashes,
    read_identity,
    write_identity,
)
from pipelines.spill import HashBuckets, hash_starts

if TYPE_CHECKING:  # a type only: importing losatok imports torch
    from losatok import LoSATokConfig

log = logging.getLogger(__name__)
EMPTY_LEDGER = "empty"  # failures/empty.parquet: the ledger's schema and no rows
RUNS_DIR = "runs"
SAMPLED, FAILED = 0, 1  # kinds of input-key hashes counted by input_counts; SAMPLED sorts first


class SinkMismatchError(RuntimeError):
    """The sink holds a dataset written by another tokenizer, fields or segmentation."""


def field_set(fields: FieldsConfig, model: LoSATokConfig) -> FieldSet:
    return default_fields(
        model.latent_dim,
        model.semantic_dim,
        logvar=fields.logvar,
        semantic_low=fields.semantic_low,
        semantic=fields.semantic,
        dtype=fields.dtype,
    )


class DatasetFinaliser:
    """The driver's side of the dataset, before and after the units commit."""

    def __init__(self, layout: DatasetLayout, fields: FieldSet, sample_rate: int, frame_rate: float) -> None:
        self.layout = layout
        self.fields = fields
        self.sample_rate = sample_rate  # Hz of the audio the tokenizer sees
        self.frame_rate = frame_rate  # latent frames per second

    @property
    def root_uri(self) -> str:
        return self.layout.url

    @classmethod
    def open(
        cls,
        sink: SinkConfig,
        fields: FieldsConfig,
        model: LoSATokConfig,
        identity: RunIdentity,
        retry: RetryPolicy | None = None,
    ) -> DatasetFinaliser:
        """Open the sink at `resolve_url(sink, identity)`, writing `run.json` if it is new.

        Call it while holding the dataset's lease: the identity is checked again here.
        """
        url = resolve_url(sink, identity)
        layout = DatasetLayout(url, sink.storage_options, retry)
        existing = read_identity(layout.fs, layout.root)
        if existing is not None and existing != identity:  # written by a run that held the lease before us
            raise SinkMismatchError(_mismatch(url, existing, identity))
        layout.fs.makedirs(layout.root, exist_ok=True)
        if existing is None:
            write_identity(layout.fs, layout.root, identity)
        return cls(layout, field_set(fields, model), model.sample_rate, model.frame_rate)

    def committer(self) -> ShardCommitter:
        """What the commit actors write this dataset's units with."""
        return ShardCommitter(self.layout, self.fields, self.frame_rate)

    # --- plan and resume -------------------------------------------------------------------
    def plan(self) -> PlanStore:
        """The stored plan (its generations); a legacy plan is attributed to the card's source."""
        legacy_source = None
        if self.layout.fs.exists(self.layout.card_path):
            legacy_source = read_card(self.layout).source
        return PlanStore(self.layout.fs, self.layout.root, legacy_source)

    def committed_units(self) -> set[int]:
        return set(self.layout.committed_shards())

    def remove_uncommitted(self) -> list[str]:
        """Delete what a killed run left behind: temporary files, and tars, ledger fragments
        and stats of shards whose index fragment (the commit point) was never written."""
        committed = self.committed_units()
        doomed = list(self.layout.temporary_files())
        for group in self.fields.groups():
            doomed += [p for n, p in self.layout.tars(group).items() if n not in committed]
        for path in self.layout.failure_fragments():
            number = _shard_of(path)
            if number is not None and number not in committed:
                doomed.append(path)
        for path in self._stats_files():
            number = _shard_of(path)
            if number is not None and number not in committed:
                doomed.append(path)
        for path in doomed:
            self.layout.fs.rm(path)
        doomed += self.plan().remove_uncommitted()
        if doomed:
            log.info("removed %d leftovers of an interrupted run", len(doomed))
        return doomed

    # --- failures: what to try again, what recovered ------------------------------------------
    def inputs_to_retry(
        self, store: PlanStore, pending: Sequence[UnitRef], everything: bool = False
    ) -> np.ndarray:
        """Sorted key hashes of the inputs the next generation plans again: failed now (their
        latest ledger row is a failure) for a transient reason, or for any reason with
        `everything`; not those with samples, nor those in a unit still to do."""
        failed = [
            row["key"] for row in open_failures(read_failures(self.layout)) if everything or row["transient"]
        ]
        candidates = np.unique(key_hashes([k for k in failed if k]))
        if not len(candidates):
            return candidates
        keep = ~self._with_samples(candidates) & ~np.isin(candidates, store.unit_hashes(pending))
        return candidates[keep]

    def record_recoveries(self, run_id: str) -> int:
        """Add a `recovered` ledger row for every failed input that has samples now (a retry that
        succeeded); returns how many. The rows go to `failures/recovered-<run_id>.parquet`."""
        failed = [row for row in open_failures(read_failures(self.layout)) if row["key"]]
        if not failed:
            return 0
        present = self._with_samples(key_hashes([row["key"] for row in failed]))
        recovered = [row for row, yes in zip(failed, present, strict=True) if yes]
        if recovered:
            writer = f"recovered-{run_id}"
            write_failures(self.layout, writer, recovered_records(recovered, writer))
        return len(recovered)

    def open_failures(self) -> list[dict]:
        """The inputs failed now, one ledger row each (see losatok_data.ledger.open_failures)."""
        return open_failures(read_failures(self.layout))

    def _with_samples(self, hashes: np.ndarray) -> np.ndarray:
        """For each input key hash, whether the dataset holds samples of that input (index streamed
        a fragment at a time; a sample key is its input's key plus `_<segment>`)."""
        present = np.zeros(len(hashes), bool)
        for keys in self._index_column("key"):
            present |= np.isin(hashes, key_hashes(sorted({k.rsplit("_", 1)[0] for k in keys})))
        return present

    # --- the card --------------------------------------------------------------------------
    def rebuild_card(self, identity: RunIdentity, generations: Sequence[Generation] = ()) -> DatasetCard:
        """Write `card.json` from what is committed: totals, merged latent stats, failures (inputs
        failed now: record the recoveries first), and one entry per generation."""
        shards = self._shard_summaries()
        committed = self.layout.committed_shards()
        by_number = {s.number: s for s in shards}
        infos = []
        for g in generations:
            mine = [by_number[n] for n in range(g.first_unit, g.first_unit + g.units) if n in by_number]
            infos.append(
                GenerationInfo(
                    number=g.number,
                    created_at=g.created_at,
                    run_id=g.run_id,
                    source=redact_text(g.source),
                    inputs_listed=g.inputs_listed,
                    inputs_new=g.inputs_new,
                    inputs_missing=g.inputs_missing,
                    inputs_retried=g.inputs_retried,
                    first_shard=g.first_unit,
                    shards=g.units,
                    shards_committed=sum(g.first_unit <= n < g.first_unit + g.units for n in committed),
                    samples=sum(s.samples for s in mine),
                    hours=sum(s.seconds for s in mine) / 3600,
                )
            )
        bytes_by_group = {
            group: sum(self.layout.fs.size(p) for n, p in self.layout.tars(group).items() if n in committed)
            for group in self.fields.groups()
        }
        stats = [self._read_stats(n) for n in committed]
        merged = ChannelStats.merge_all([s for s in stats if s is not None]) if any(stats) else None
        merged = merged if merged is not None and merged.count else None  # empty shards only: no stats
        if not self.layout.failure_fragments():
            # an empty ledger, so that `failures/*.parquet` reads (DuckDB, pyarrow) on a clean dataset
            write_failures(self.layout, EMPTY_LEDGER, [])
        ledger = read_failures(self.layout)
        now = utc_now()
        card = DatasetCard(
            created_at=self._created_at() or now,  # a resume or append keeps the creation time
            updated_at=now,
            tokenizer=TokenizerIdentity(**identity.tokenizer),
            fields=self.fields,
            sample_rate=self.sample_rate,
            frame_rate=self.frame_rate,
            totals=Totals(
                samples=sum(s.samples for s in shards),
                frames=sum(s.frames for s in shards),
                hours=sum(s.seconds for s in shards) / 3600,
                shards=len(committed),
                bytes=sum(bytes_by_group.values()),
                bytes_by_group=bytes_by_group,
            ),
            latent_stats=merged,
            failures=failure_counts(ledger),
            # where it began, credentials redacted from a URL; every source: `generations`
            source=redact_text(generations[0].source) if generations else None,
            description=f"written by losatok-tokenize; run identity: {json.dumps(asdict(identity), sort_keys=True)}",
            generations=tuple(infos),
        )
        write_card(self.layout, card)
        return card

    def input_counts(self) -> tuple[int, int]:
        """(inputs with samples, failed inputs) over the whole dataset, by input key (many spans
        of one recording are many inputs; a sample key is its input's key plus `_<segment>`).

        Streams the index's `key` column a fragment at a time; the 16-byte hashes of the input
        keys go to local temporary files and are counted a bucket at a time (`pipelines.spill`),
        so memory does not grow with the size of the dataset.
        """
        with tempfile.TemporaryDirectory(prefix="losatok-counts-") as scratch:
            with HashBuckets(scratch) as entries:
                for keys in self._index_column("key"):
                    entries.add(key_hashes([k.rsplit("_", 1)[0] for k in keys]), 0, SAMPLED)
                for batch in read_failures(self.layout).to_batches(max_chunksize=1 << 16):
                    keys = batch.column("key").to_pylist()
                    locations = batch.column("location").to_pylist()
                    failed = [key or location for key, location in zip(keys, locations, strict=True)]
                    entries.add(key_hashes(failed), 0, FAILED)
            good = failed = 0
            for bucket in entries.buckets():  # sorted by hash, then kind: SAMPLED first
                kinds = bucket["kind"][hash_starts(bucket)]  # (distinct hashes,)
                good += int((kinds == SAMPLED).sum())
                failed += int((kinds == FAILED).sum())  # failed, and never sampled
        return good, failed

    def _index_column(self, *columns: str) -> Iterator[list]:
        """Values of index columns, one committed shard's fragment at a time (one list per column
        when one column is asked for, else lists of rows)."""
        for path in self.layout.committed_shards().values():
            table = pq.read_table(
                pa.BufferReader(self.layout.fs.cat_file(path)), columns=list(columns), use_threads=False
            )
            yield table.column(0).to_pylist() if len(columns) == 1 else table

    def _shard_summaries(self) -> list[ShardInfo]:
        """Per-shard samples, frames and seconds, read a fragment at a time (bounded memory)."""
        out = []
        for table in self._index_column("shard", "frame_count", "duration"):
            out += shard_summaries(table.append_column("key", table.column("shard")))
        return out

    def write_run_log(self, record: dict[str, Any]) -> str:
        """Keep `runs/run-<UTC time>.json`: what each run (or resume) did, where, how fast."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.layout.path(RUNS_DIR, f"run-{stamp}.json")
        with open_atomic(self.layout.fs, path) as handle:
            handle.write(json.dumps(redact(record), indent=2, sort_keys=True, default=sorted).encode())
        return path

    def _created_at(self) -> str | None:
        """The creation time recorded by an earlier run's card, if there is one."""
        if not self.layout.fs.exists(self.layout.card_path):
            return None
        return read_card(self.layout).created_at or None

    def _stats_files(self) -> list[str]:
        try:
            return self.layout.fs.ls(self.layout.path(STATS_DIR), detail=False)
        except FileNotFoundError:
            return []

    def _read_stats(self, number: int) -> ChannelStats | None:
        """A committed shard's stats fragment; a missing one is rebuilt from the shard's latents.

        Since schema 1.1 the fragment is written before the shard commits, so a missing one was
        lost or deleted: the card's stats must still cover every frame, so they are recomputed
        (and the fragment rewritten) rather than merged over the shards that remain.
        """
        try:
            return read_stats_fragment(self.layout, number)
        except FileNotFoundError:
            pass
        reader = DatasetReader(self.layout, self._card_for_reading())
        stats = reader.latent_stats(number)
        if stats.count == 0:
            return None  # an empty shard of a schema 1.0 run, which wrote no stats for it
        log.warning(
            "%s has no stats fragment; recomputed it from the shard's %d latent frames",
            shard_name(number),
            stats.count,
        )
        write_stats_fragment(self.layout, number, stats)
        return stats

    def _card_for_reading(self) -> DatasetCard:
        # what a reader needs of the card: the fields; identity and totals are not read
        return DatasetCard(
            tokenizer=TokenizerIdentity(preset="", config_hash=""),
            fields=self.fields,
            sample_rate=self.sample_rate,
            frame_rate=self.frame_rate,
        )


def resolve_url(sink: SinkConfig, identity: RunIdentity) -> str:
    """Where this run writes: `sink.path`, new or written with this identity; else refused.

    A dataset written with another identity is refused, naming every difference, unless
    `sink.force_new_version` is set: then the first `<path>-vN` that is free or written with
    this identity. Reads only.
    """
    url, version = sink.path.rstrip("/"), 1
    while True:
        layout = DatasetLayout(url, sink.storage_options)
        existing = read_identity(layout.fs, layout.root)
        if existing is None or existing == identity:
            break
        if not sink.force_new_version:
            raise SinkMismatchError(_mismatch(url, existing, identity))
        version += 1
        url = f"{sink.path.rstrip('/')}-v{version}"
    if version > 1:
        log.warning("%s holds another tokenizer's dataset; writing the new version to %s", sink.path, url)
    return url


def _mismatch(url: str, existing: RunIdentity, identity: RunIdentity) -> str:
    differences = "\n  ".join(existing.differences(identity))
    return (
        f"{url} was written by a different run configuration:\n  {differences}\n"
        "Use the same model, fields and segmentation to resume it, another sink.path, "
        "or sink.force_new_version=true to write a new version beside it."
    )


def _shard_of(path: str) -> int | None:
    name = path.rsplit("/", 1)[-1].split(".", 1)[0]
    return int(name[6:]) if name.startswith("shard-") and name[6:].isdigit() else None
