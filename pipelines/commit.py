"""The commit stage: each unit becomes one shard of the latent dataset (`losatok_data` layout), exactly once.

A unit commits in this order: its failure-ledger fragment, its tars and stats, its index
fragment (the commit point). Whatever a killed run left past the last commit point is removed
by `SinkDataset.remove_uncommitted` (`pipelines.sink`) before a rerun writes anything.
No torch here: a worker that only commits stays small and starts fast.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from losatok_data.fields import FieldSet
from losatok_data.layout import DatasetLayout, shard_name
from losatok_data.ledger import FailureRecord, write_failures
from losatok_data.sample import LatentSample, SampleMetadata
from losatok_data.writer import write_shard
from pipelines.plan import Unit
from pipelines.records import EncodedSegment, EncodeFailure, Segment, StageStats, UnitSummary, unpack_payload


class ShardCommitter:
    """Writes units into the dataset at `layout`: shard tars, stats and index fragment, failures."""

    def __init__(self, layout: DatasetLayout, fields: FieldSet, frame_rate: float) -> None:
        self.layout = layout
        self.fields = fields
        self.frame_rate = frame_rate  # latent frames per second

    def commit_unit(
        self,
        unit: Unit,
        encoded: list[tuple[Segment, EncodedSegment]],
        failures: list[FailureRecord],
        stages: StageStats | None = None,
    ) -> UnitSummary:
        """Write one unit's shard; returns its summary (samples, seconds, failures, bytes), with
        `stages` (where and how long it was decoded and encoded) attached."""
        name = shard_name(unit.index)
        failures = [replace(f, writer=name) for f in failures]
        if failures:
            write_failures(self.layout, name, failures)
        samples = [self._sample(segment, result) for segment, result in encoded]
        # write_shard writes the stats fragment before the index fragment (the commit point)
        written = write_shard(self.layout, unit.index, samples, self.fields, frame_rate=self.frame_rate)
        return UnitSummary(
            unit=unit.index,
            inputs=len(unit.items),
            samples=written.info.samples,
            audio_seconds=written.info.seconds,
            failures=len({f.location for f in failures}),
            transient=len({f.input_id for f in failures if f.transient}),  # the storage failed
            bytes=sum(written.bytes_by_group.values()),
            stages=stages or StageStats(),
        )

    def _sample(self, segment: Segment, result: EncodedSegment) -> LatentSample:
        meta = dict(segment.metadata)
        if meta.get("tags") is not None:
            meta["tags"] = tuple(meta["tags"])
        metadata = SampleMetadata(
            source=segment.location,
            offset=segment.offset,
            duration=segment.duration,
            sample_rate=segment.sample_rate,
            frame_count=result.frames,
            segment=int(segment.key.rsplit("_", 1)[1]),
            **meta,
            **segment.measures,
        )
        return LatentSample(segment.key, metadata, result.arrays)


def commit_stage(batch: dict[str, np.ndarray], committer: ShardCommitter) -> dict[str, list]:
    """The commit stage (`CommitStage` actors run it): write each unit's shard, index fragment
    and failures, atomically; one `UnitSummary` row per unit."""
    summaries = []
    for blob in batch["payload"]:
        unit, segments, results, failures, stages = unpack_payload(blob)
        encoded = []
        for segment, result in zip(segments, results, strict=True):
            if isinstance(result, EncodeFailure):
                failures.append(
                    FailureRecord(segment.location, "encode", "EncodeFailure", str(result), key=segment.key)
                )
            else:
                encoded.append((segment, result))
        summaries.append(committer.commit_unit(unit, encoded, failures, stages))
    return UnitSummary.to_batch(summaries)


class CommitStage:
    """Ray actor body around `commit_stage`: commits run in processes of their own.

    Not tasks: a commit task op at a fraction of a CPU made Ray Data's resource budget hold back
    decode tasks, and its extra worker processes came and went, so that decode tasks landed on
    fresh workers and paid for importing torch (bench/pipeline_feed.py; docs/benchmarks.md).
    """

    def __init__(self, committer: ShardCommitter) -> None:
        self.committer = committer

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        return commit_stage(batch, self.committer)
