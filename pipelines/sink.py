"""The dataset a run writes, as the driver holds it: open it (resume or create, refusing another
run configuration's dataset), clear what a killed run left, name the failed inputs to plan again,
record the ones that recovered and log the run. Units themselves commit in `pipelines.commit`;
the card is rebuilt in `pipelines.finalise`.

Beyond the `losatok_data` layout the pipeline keeps small files of its own at the root:
`run.json` (what wrote this dataset: tokenizer, fields, segmentation), `plan/` and
`generations/` (which inputs make which shard, one generation per append; see
`pipelines.plan`), `lease.json` (the one run writing now; see `pipelines.lease`),
`runs/run-*.json` (one log per run: counts, nodes, speed) and, while a run goes, `parts/`
(windows of units not yet assembled into their shards; see `pipelines.commit`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from losatok_data.card import read_card
from losatok_data.fields import FieldSet, default_fields
from losatok_data.layout import STATS_DIR, DatasetLayout
from losatok_data.ledger import open_failures, read_failures, recovered_records, write_failures
from losatok_storage.filesystem import open_atomic
from losatok_storage.retry import RetryPolicy
from losatok_storage.secrets import redact
from pipelines.commit import PARTS_DIR, ShardCommitter
from pipelines.config import FieldsConfig, SinkConfig
from pipelines.finalise import DatasetFinaliser, index_column
from pipelines.plan import PlanStore, RunIdentity, UnitRef, key_hashes, read_identity, write_identity
from pipelines.records import input_digest

if TYPE_CHECKING:  # a type only: importing losatok imports torch
    from losatok import LoSATokConfig

log = logging.getLogger(__name__)
RUNS_DIR = "runs"


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


class SinkDataset:
    """The driver's handle on the dataset a run writes: before the units commit (open, clear,
    plan, retry) and after (recoveries, run log); hands out the unit committer and the finaliser."""

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
    ) -> SinkDataset:
        """Open the sink at `resolve_url(sink, identity)`, writing `run.json` if it is new.

        Call it while holding the dataset's lease: the identity is checked again here.
        """
        url, identity = resolve_url(sink, identity)
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

    def finaliser(self) -> DatasetFinaliser:
        """What rebuilds this dataset's card and counts its inputs once the units are committed."""
        return DatasetFinaliser(self.layout, self.fields, self.sample_rate, self.frame_rate)

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
        """Delete what a killed run left behind: temporary files; tars, ledger fragments and
        stats of shards whose index fragment (the commit point) was never written; and the
        parts folder (`remove_parts`). Returns the paths removed, files only."""
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
        doomed += self.remove_parts()
        doomed += self.plan().remove_uncommitted()
        if doomed:
            log.info("removed %d leftovers of an interrupted run", len(doomed))
        return doomed

    def remove_parts(self) -> list[str]:
        """Delete the parts folder, windows of units kept until their shard is assembled
        (`pipelines.commit`); returns the files it held. The driver calls it after a run, when no
        commit reads them: each is a leftover of a committed shard, or a part of one that is not
        committed, which the next run encodes again from scratch."""
        folder = self.layout.path(PARTS_DIR)
        if not self.layout.fs.exists(folder):
            return []
        files = sorted(self.layout.fs.find(folder))
        self.layout.fs.rm(folder, recursive=True)
        return files

    def _stats_files(self) -> list[str]:
        try:
            return self.layout.fs.ls(self.layout.path(STATS_DIR), detail=False)
        except FileNotFoundError:
            return []

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

    def record_recoveries(self, run_id: str, left_out: dict[str, str] | None = None) -> int:
        """Add a `recovered` ledger row for every failed input that has samples now (a retry that
        succeeded), or that this run left out whole (`left_out`: key -> why; silent, or a copy of
        audio the dataset holds); returns how many. The rows go to
        `failures/recovered-<run_id>.parquet`."""
        failed = [row for row in open_failures(read_failures(self.layout)) if row["key"]]
        if not failed:
            return 0
        left_out = left_out or {}
        present = self._with_samples(key_hashes([row["key"] for row in failed]))
        recovered = [row for row, yes in zip(failed, present, strict=True) if yes]
        gone = [row for row, yes in zip(failed, present, strict=True) if not yes and row["key"] in left_out]
        if recovered or gone:
            writer = f"recovered-{run_id}"
            records = recovered_records(recovered, writer) + [
                replace(record, message=f"left out after an earlier failure: {left_out[record.key]}")
                for record in recovered_records(gone, writer)
            ]
            write_failures(self.layout, writer, records)
        return len(recovered) + len(gone)

    def open_failures(self) -> list[dict]:
        """The inputs failed now, one ledger row each (see losatok_data.ledger.open_failures)."""
        return open_failures(read_failures(self.layout))

    def _with_samples(self, hashes: np.ndarray) -> np.ndarray:
        """For each input key hash, whether the dataset holds samples of that input (index streamed
        a fragment at a time; a sample key is its input's key plus `_<segment>`)."""
        present = np.zeros(len(hashes), bool)
        for keys in index_column(self.layout, "key"):
            present |= np.isin(hashes, key_hashes(sorted({k.rsplit("_", 1)[0] for k in keys})))
        return present

    def content_digests(self) -> np.ndarray:
        """Sorted (N,) `S16` `input_digest`s of the inputs the dataset holds (sink.dedup), from the
        index's `key` and `content_hash`, a fragment at a time. Inputs whose rows lack a hash
        (written before schema 1.3) are left out: they cannot be compared."""
        parts = [np.empty(0, "S16")]
        for table in index_column(self.layout, "key", "content_hash"):
            by_input: dict[str, list[tuple[int, str | None]]] = {}
            for key, content in zip(
                *(table.column(c).to_pylist() for c in ("key", "content_hash")), strict=True
            ):
                name, segment = key.rsplit("_", 1)
                by_input.setdefault(name, []).append((int(segment), content))
            digests = [
                input_digest([content for _, content in sorted(rows)])
                for rows in by_input.values()
                if all(content for _, content in rows)
            ]
            parts.append(np.array(digests, dtype="S16"))  # a fragment's worth of Python bytes at a time
        return np.unique(np.concatenate(parts))

    # --- the run log -----------------------------------------------------------------------
    def write_run_log(self, record: dict[str, Any]) -> str:
        """Keep `runs/run-<UTC time>.json`: what each run (or resume) did, where, how fast."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.layout.path(RUNS_DIR, f"run-{stamp}.json")
        with open_atomic(self.layout.fs, path) as handle:
            handle.write(json.dumps(redact(record), indent=2, sort_keys=True, default=sorted).encode())
        return path


def resolve_url(sink: SinkConfig, identity: RunIdentity) -> tuple[str, RunIdentity]:
    """Where this run writes, and the identity it writes with: `sink.path`, new or written with
    this identity; else refused.

    A dataset written with another identity is refused, naming every difference, unless
    `sink.force_new_version` is set: then the first `<path>-vN` that is free or written with
    this identity. An unset `segment.cut` takes each candidate's own mode (`with_cut`). Reads only.
    """
    url, version = sink.path.rstrip("/"), 1
    while True:
        layout = DatasetLayout(url, sink.storage_options)
        existing = read_identity(layout.fs, layout.root)
        mine = with_cut(identity, existing)
        if existing is None or existing == mine:
            break
        if not sink.force_new_version:
            raise SinkMismatchError(_mismatch(url, existing, mine))
        version += 1
        url = f"{sink.path.rstrip('/')}-v{version}"
    if version > 1:
        log.warning("%s holds another tokenizer's dataset; writing the new version to %s", sink.path, url)
    return url, mine


def with_cut(identity: RunIdentity, existing: RunIdentity | None) -> RunIdentity:
    """`identity` with an unset `segment.cut` decided: the mode of the dataset it would resume
    (`existing`; equal for one written before the mode was recorded), or pause for a new one."""
    if identity.segment.get("cut") is not None:
        return identity
    cut = existing.segment["cut"] if existing is not None else "pause"
    return replace(identity, segment={**identity.segment, "cut": cut})


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
