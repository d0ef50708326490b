"""Finalising a run: the dataset's card rebuilt from what is committed (totals, merged latent
stats, failures, generations) and its inputs counted. The dataset the run writes is held by
`pipelines.sink.SinkDataset`, which hands out a `DatasetFinaliser` once the units are committed.

Besides the shards and their index, the `losatok_data` layout holds `stats/shard-*.json`:
per-shard latent statistics, merged into the card here. The per-shard totals the card is
summed from are written to `shards.parquet` too, for readers to split shards across ranks.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict

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
from losatok_data.fields import FieldSet
from losatok_data.index import INDEX_SCHEMA, summarise_shards, write_shard_summary
from losatok_data.layout import DatasetLayout, shard_name
from losatok_data.ledger import RECOVERED, failure_counts, read_failures, write_failures
from losatok_data.reader import DatasetReader
from losatok_data.stats import ChannelStats, read_stats_fragment, write_stats_fragment
from losatok_storage.secrets import redact_text
from pipelines.plan import Generation, RunIdentity, key_hashes
from pipelines.spill import HashBuckets, hash_starts

log = logging.getLogger(__name__)
EMPTY_LEDGER = "empty"  # failures/empty.parquet: the ledger's schema and no rows
# kinds of input-key hashes counted by input_counts, in the order that decides: an input with
# samples is good; one whose failure was resolved without samples (left out whole: silent, a
# copy; a `recovered` row) is neither; else a failed one
SAMPLED, RESOLVED, FAILED = 0, 1, 2


class DatasetFinaliser:
    """Rebuilds the card of the dataset at `layout` from what is committed, and counts its inputs."""

    def __init__(self, layout: DatasetLayout, fields: FieldSet, sample_rate: int, frame_rate: float) -> None:
        self.layout = layout
        self.fields = fields
        self.sample_rate = sample_rate  # Hz of the audio the tokenizer sees
        self.frame_rate = frame_rate  # latent frames per second

    def rebuild_card(self, identity: RunIdentity, generations: Sequence[Generation] = ()) -> DatasetCard:
        """Write `shards.parquet` and `card.json` from what is committed: per-shard totals, then
        totals, merged latent stats, failures (inputs failed now: record the recoveries first),
        and one entry per generation."""
        committed = self.layout.committed_shards()
        # a fragment at a time, two columns of each (bounded memory); empty shards as zeros
        shards = summarise_shards(self.layout, committed)
        write_shard_summary(self.layout, shards)
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
                for keys in index_column(self.layout, "key"):
                    entries.add(key_hashes([k.rsplit("_", 1)[0] for k in keys]), 0, SAMPLED)
                for batch in read_failures(self.layout).to_batches(max_chunksize=1 << 16):
                    rows = list(zip(*(batch.column(c).to_pylist() for c in ("key", "location", "stage"))))
                    for kind, resolved in ((FAILED, False), (RESOLVED, True)):
                        named = [
                            key or where for key, where, stage in rows if (stage == RECOVERED) == resolved
                        ]
                        entries.add(key_hashes(named), 0, kind)
            good = failed = 0
            for bucket in entries.buckets():  # sorted by hash, then kind: SAMPLED first
                kinds = bucket["kind"][hash_starts(bucket)]  # (distinct hashes,)
                good += int((kinds == SAMPLED).sum())
                failed += int((kinds == FAILED).sum())  # failed, and never sampled
        return good, failed

    def _created_at(self) -> str | None:
        """The creation time recorded by an earlier run's card, if there is one."""
        if not self.layout.fs.exists(self.layout.card_path):
            return None
        return read_card(self.layout).created_at or None

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


def index_column(layout: DatasetLayout, *columns: str) -> Iterator[list | pa.Table]:
    """Values of index columns, one committed shard's fragment at a time: a list when one column
    is asked for, else a table. A column the fragment lacks (an older minor) reads as nulls."""
    for path in layout.committed_shards().values():
        fragment = pq.ParquetFile(pa.BufferReader(layout.fs.cat_file(path)))
        present = [c for c in columns if c in fragment.schema_arrow.names]
        table = fragment.read(columns=present, use_threads=False)
        for name in columns:
            if name not in present:
                field = INDEX_SCHEMA.field(name)
                table = table.append_column(field, pa.nulls(table.num_rows, field.type))
        table = table.select(list(columns))
        yield table.column(0).to_pylist() if len(columns) == 1 else table
