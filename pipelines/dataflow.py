"""The Ray dataflow: units stream through decode tasks (CPU, spread over the cluster), encode
actors (one per accelerator) and commit actors, with Ray Data's backpressure in between.

Each row is one unit, or one window of a unit that holds more than `cluster.window_seconds` of
audio (the decode task yields them as it goes); the stages themselves are the plain functions of
`decode`, `encode` and `commit`, which run and are tested without Ray. Ray Data restarts a dead
actor and retries its row; a unit commits atomically (its windows as parts, assembled once all
are there), so a retry never duplicates a sample. The object store the rows fill is capped at a
few windows per stage slot (`limit_object_store`), so memory does not follow an input's length.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import ray

from losatok_input.rule import SkippedFiles
from losatok_storage.retry import RetryPolicy
from pipelines.commit import CommitStage, ShardCommitter
from pipelines.config import ClusterConfig, FieldsConfig, ModelConfig, SegmentConfig, TokenizeConfig
from pipelines.plan import UnitRef, load_unit
from pipelines.records import StageStats, UnitSummary, pack_payload, unpack_payload
from raycluster.connect import join_or_start

log = logging.getLogger(__name__)


def init_ray(cluster: ClusterConfig) -> None:
    """Join the configured cluster, or start a local one on this machine (with cluster.dashboard,
    its dashboard on `cluster.dashboard_host`).

    A cluster that is not there, or whose token authentication differs from this driver's,
    raises `raycluster.connect.ClusterError` (one line) before anything is written.
    """
    if cluster.address:  # where this driver is reached from the cluster
        flag = f"cluster.address={cluster.address}" if cluster.address != "auto" else "cluster=auto"
        join_or_start(cluster.address, flag, _node_ip_address=cluster.node_ip_address)
    else:  # a Ray of this machine: its size, and where its dashboard listens
        join_or_start(
            None,
            "",
            num_cpus=cluster.num_cpus,
            include_dashboard=cluster.dashboard,
            dashboard_host=cluster.dashboard_host,
        )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # our own progress line says more in less space
    context.print_on_execution_start = False


def encode_actor_count(cluster: ClusterConfig) -> tuple[int, dict[str, Any]]:
    """(actors, Ray resources per actor): one per GPU, else one per unit of the custom resource, else 1."""
    if cluster.encode_resources:
        name, amount = next(iter(cluster.encode_resources.items()))
        available = ray.cluster_resources().get(name, 0)
        count = cluster.encode_actors or max(1, int(available // amount))
        return count, {"resources": dict(cluster.encode_resources), "num_cpus": 1}
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        return cluster.encode_actors or gpus, {"num_gpus": 1}
    return cluster.encode_actors or 1, {"num_cpus": 1}


def _node() -> str:
    return ray.get_runtime_context().get_node_id()


class ContentRegistry:
    """Ray actor (sink.dedup): which input owns each audio content a run meets.

    Seeded with the `input_digest`s of the inputs the dataset already holds (sorted (N,) `S16`,
    16 bytes each: 1.6 GB per 10^8 inputs); the first input of this run to claim a new digest
    owns it. A unit retried after a crash claims again under the same keys and gets the same
    answer; a rerun after the driver died seeds from what was committed. Two limits: an actor
    restarted after its node died knows the seed but not this run's claims (a copy may then be
    kept twice), and an input skipped as a copy of one whose unit then fails for good is not
    in the dataset (the owner's failure is in the ledger).
    """

    def __init__(self, seeded: np.ndarray) -> None:
        self.seeded = seeded
        self.owners: dict[bytes, str] = {}

    def claim(self, entries: list[tuple[str, bytes]]) -> list[str]:
        """For each (input key, digest): the key owning that digest, or "" when the dataset held it."""
        queries = np.array([d for _, d in entries], dtype="S16")
        at = np.minimum(np.searchsorted(self.seeded, queries), max(len(self.seeded) - 1, 0))
        # array against array: a numpy bytes scalar drops trailing NULs, so `seeded[i] == digest`
        # would miss the 1 digest in 256 that ends in one
        held = self.seeded[at] == queries if len(self.seeded) else np.zeros(len(queries), bool)
        return [
            "" if known else self.owners.setdefault(digest, key)
            for (key, digest), known in zip(entries, held, strict=True)
        ]


def decode_stage(
    batch: dict[str, np.ndarray],
    segment: SegmentConfig,
    sample_rate: int,
    source_options: dict[str, Any],
    plan_options: dict[str, Any],
    retry: RetryPolicy,
    registry: Any = None,
    window_seconds: float | None = None,
) -> Iterator[dict[str, list]]:
    """Ray task body: decode and segment each unit of the batch (read from its plan partition),
    yielding one payload per window of about `window_seconds` of audio (None: one per unit).

    A payload is (unit, window number, last?, segments, failures, stages); the unit's failures
    and what it left out travel with its last window, and each window's decode time with it.
    `sample_rate`: Hz the tokenizer takes; `source_options`: fsspec options of the source's
    storage, `plan_options` of the sink's (where the plan partitions lie); `retry`: every
    storage call's retry policy; `registry`: a `ContentRegistry` actor with sink.dedup.
    """
    from pipelines.decode import decode_windows  # torch and FFmpeg's libraries: workers only

    claim = None if registry is None else lambda entries: ray.get(registry.claim.remote(entries))
    for index, partition in zip(batch["unit"], batch["plan"], strict=True):
        unit = load_unit(str(partition), plan_options, int(index), retry)
        started_at, started = time.time(), time.perf_counter()
        skipped = SkippedFiles()  # what WebDataset tars hold besides audio samples
        dropped: Counter[str] = Counter()  # silent segments, duplicate inputs
        left_out: dict[str, str] = {}
        failures: list = []
        windows = decode_windows(
            unit.items,
            segment,
            sample_rate,
            source_options,
            retry,
            window_seconds,
            failures,
            skipped,
            dropped,
            claim,
            left_out,
        )
        # one window of look-ahead: a window is known to be the last only once the next is not;
        # the unit's failures and what it left out go with its last window, each window's time with it
        held, number = next(windows), 0
        for following in itertools.chain(windows, [None]):  # lazily: a window at a time
            last = following is None
            stages = StageStats(
                decode_node=_node(),
                decode_seconds=time.perf_counter() - started,
                decode_started_at=started_at,
                **(
                    {"skipped": skipped.to_dict(), "dropped": dict(+dropped), "left_out": left_out}
                    if last
                    else {}
                ),
            )
            yield _payload_batch(index, (unit, number, last, held, failures if last else [], stages))
            held, number = following, number + 1
            started_at, started = time.time(), time.perf_counter()


def _payload_batch(unit: Any, payload: tuple) -> dict[str, list]:
    return {"unit": [unit], "payload": [pack_payload(payload)]}


def decode_arguments(config: TokenizeConfig, sample_rate: int, registry: Any = None) -> dict[str, Any]:
    """`decode_stage`'s keyword arguments (past the batch) from a run's config."""
    return {
        "segment": config.segment,
        "sample_rate": sample_rate,
        "source_options": config.source.storage_options,
        "plan_options": config.sink.storage_options,
        "retry": config.cluster.retry_policy(),
        "registry": registry,
        "window_seconds": config.cluster.window_seconds,
    }


class EncodeStage:
    """Ray actor body: the model is loaded once per actor and kept."""

    def __init__(
        self, model: ModelConfig, fields: FieldsConfig, max_frames: int | None, threads: int | None = None
    ) -> None:
        """`max_frames`: an encode batch's budget (count x longest, in latent frames; None: by
        device); `threads`: torch threads on a CPU-only node (None: the node's cores)."""
        import torch

        from pipelines.encode import SegmentEncoder  # torch and the model: the encode actor's only

        if not torch.cuda.is_available():
            # Ray pins a 1-CPU actor to one thread; on a CPU-only cluster the encoder is the
            # bottleneck and shares the node with decode tasks, so let it use the node's cores
            torch.set_num_threads(threads or os.cpu_count() or 1)
        self.encoder = SegmentEncoder(model, fields, max_frames)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        payloads = []
        for blob in batch["payload"]:
            unit, window, last, segments, failures, stages = unpack_payload(blob)
            started_at, started = time.time(), time.perf_counter()
            results = self.encoder.encode([s.float_wav() for s in segments])
            stages = replace(
                stages,
                encode_node=_node(),
                encode_seconds=time.perf_counter() - started,
                encode_started_at=started_at,
            )
            segments = [s.without_audio() for s in segments]  # the commit stage needs no audio
            payloads.append(pack_payload((unit, window, last, segments, results, failures, stages)))
        return {"unit": list(batch["unit"]), "payload": payloads}


def encode_arguments(config: TokenizeConfig) -> dict[str, Any]:
    """The encode stage's constructor arguments from a run's config."""
    return {
        "model": config.model,
        "fields": config.fields,
        "max_frames": config.cluster.max_frames_per_batch,
        "threads": config.cluster.encode_threads,
    }


# windows each encode actor and each decode slot may have waiting in the object store
WINDOWS_PER_ACTOR, WINDOWS_PER_DECODE_SLOT = 4, 2


def limit_object_store(cluster: ClusterConfig, sample_rate: int, actors: int) -> int:
    """Cap the object store memory the dataflow may fill (Ray Data's resource limit), in bytes:
    WINDOWS_PER_ACTOR windows per encode actor and WINDOWS_PER_DECODE_SLOT per decode slot, a
    window being `cluster.window_seconds` of float32 audio (38 MB at 600 s). Returns the cap.

    Decode runs ~20x faster than a CPU encoder: without a cap, Ray Data's default (half the
    object store, itself 30 % of a node's memory) let a long input's windows pile up there,
    1.2 GB more at 6 hours than at 1 on this machine (bench/long_input_memory.py). The cap makes
    the bound a number of windows, whatever the inputs' lengths or the node's memory.
    """
    window_bytes = cluster.window_seconds * sample_rate * 4
    slots = ray.cluster_resources().get("CPU", 1) / cluster.decode_cpus
    limit = int(window_bytes * (WINDOWS_PER_ACTOR * actors + WINDOWS_PER_DECODE_SLOT * slots))
    options = ray.data.DataContext.get_current().execution_options
    options.resource_limits = options.resource_limits.copy(object_store_memory=limit)
    return limit


def run_units(
    config: TokenizeConfig,
    units: list[UnitRef],
    committer: ShardCommitter,
    sample_rate: int,
    encode_stage: type = EncodeStage,
    seen: np.ndarray | None = None,
) -> Iterator[UnitSummary]:
    """Stream `units` through the three stages; yields one summary per committed unit.

    A unit travels as a reference (its number and plan partition); the decode task reads its
    inputs, so the driver never holds or pickles item lists. `encode_stage`: the encode actor's
    class (bench/pipeline_feed.py swaps in one that does no work, to measure what the rest of
    the dataflow can feed; it takes `encode_arguments`). `seen`: with sink.dedup, the sorted
    `input_digest`s the dataset holds (`SinkDataset.content_digests`).
    """
    if not units:
        return
    registry = None
    if seen is not None:  # one small actor; restarted with its seed if its node goes
        actor = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(ContentRegistry)
        registry = actor.remote(ray.put(seen))
    actors, actor_args = encode_actor_count(config.cluster)
    limit_object_store(config.cluster, sample_rate, actors)
    layout = committer.layout
    rows = [{"unit": u.index, "plan": layout.url_of(layout.path(u.partition))} for u in units]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    warnings.filterwarnings("ignore", message=".*ray_remote_args_fn.*is deprecated")
    ds = ds.map_batches(
        decode_stage,
        fn_kwargs=decode_arguments(config, sample_rate, registry),
        batch_size=1,
        num_cpus=config.cluster.decode_cpus,
        compute=ray.data.TaskPoolStrategy(),
        # SPREAD puts decode work on every node; a remote-args function also keeps Ray Data
        # from fusing decode into the encode actors, which would pin decoding to their nodes
        ray_remote_args_fn=lambda: {"scheduling_strategy": "SPREAD"},
    )
    ds = ds.map_batches(
        encode_stage,
        fn_constructor_kwargs=encode_arguments(config),
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=actors),
        **actor_args,
    )
    ds = ds.map_batches(
        CommitStage,
        fn_constructor_kwargs={"committer": committer},
        batch_size=1,
        # no CPU reserved: Ray Data budgets each operator's reservation out of the cluster's
        # CPUs, so even 0.1 CPU here cost a decode slot on a 3-CPU cluster; a commit uses
        # ~0.4 core per 10 000 audio s/s (16 ms per 440 audio s, bench/pipeline_feed.py)
        num_cpus=0,
        # one process commits ~27 000 audio s/s to a local disk; two per encode actor leave
        # room for a slower store
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2 * actors),
    )
    for row in ds.iter_rows():
        yield UnitSummary.from_row(row)
