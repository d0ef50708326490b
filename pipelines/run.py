"""The driver of a tokenization run: identity check, plan, resume, progress, card, verdict."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass, field

import ray

from losatok import LoSATokConfig, preset
from losatok.checkpoint import checkpoint_config
from pipelines.config import TokenizeConfig
from pipelines.flow import encode_actor_count, init_ray, run_units
from pipelines.plan import RunIdentity, make_units
from pipelines.sources import list_inputs
from pipelines.write import DatasetSink
from schemas.card import TokenizerIdentity, sha256_file

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    root: str
    units: int = 0
    units_resumed: int = 0  # committed by an earlier run and skipped
    inputs: int = 0
    samples: int = 0  # written by this run
    audio_seconds: float = 0.0  # encoded by this run
    failures: int = 0  # inputs in the ledger, all runs
    wall_seconds: float = 0.0
    decode_nodes: set[str] = field(default_factory=set)
    encode_nodes: set[str] = field(default_factory=set)
    nodes: dict[str, dict[str, float]] = field(default_factory=dict)  # node id -> resources
    encode_actors: int = 0
    decode_busy_seconds: float = 0.0  # summed over decode tasks
    encode_busy_seconds: float = 0.0  # summed over encode actors
    failure_fraction: float = 0.0
    ok: bool = True

    def describe(self) -> str:
        rate = self.audio_seconds / max(self.wall_seconds, 1e-9)
        busy = self.encode_busy_seconds / max(self.wall_seconds * max(self.encode_actors, 1), 1e-9)
        return (
            f"dataset {self.root}: {self.units} shards ({self.units_resumed} resumed), {self.inputs} inputs, "
            f"{self.samples} new samples, {self.audio_seconds / 3600:.3f} h of audio in {self.wall_seconds:.1f} s "
            f"({rate:.1f}x real time), {self.failures} failed inputs ({100 * self.failure_fraction:.1f} %); "
            f"encode actors busy {100 * busy:.0f} % of the run, decode {self.decode_busy_seconds:.1f} task-s"
        )


def model_config(config: TokenizeConfig) -> LoSATokConfig:
    """The tokenizer's config: from our checkpoint when it carries one, else the named preset."""
    stored = checkpoint_config(config.model.checkpoint) if config.model.checkpoint else None
    return stored or preset(config.model.preset)


def run_identity(config: TokenizeConfig, tokenizer: LoSATokConfig) -> RunIdentity:
    model = config.model
    tokenizer = TokenizerIdentity(
        preset=model.preset,
        config_hash=tokenizer.config_hash(),
        checkpoint_sha256=sha256_file(model.checkpoint) if model.checkpoint else None,
        semantic_encoder_sha256=sha256_file(model.semantic_encoder) if model.semantic_encoder else None,
    )
    return RunIdentity(
        tokenizer=asdict(tokenizer),
        seed=None if model.checkpoint else model.seed,
        fields=asdict(config.fields),
        segment=asdict(config.segment),
    )


class Progress:
    """One status line, refreshed at most every `every` seconds, and on the last unit."""

    def __init__(self, total_units: int, actors: int, every: float = 2.0) -> None:
        self.total, self.actors, self.every = total_units, actors, every
        self.started = self.last = time.perf_counter()
        self.done = 0
        self.inputs = self.failures = 0
        self.seconds = 0.0

    def update(self, summary: dict) -> None:
        self.done += 1
        self.inputs += summary["inputs"]
        self.failures += summary["failures"]
        self.seconds += summary["audio_seconds"]
        now = time.perf_counter()
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            hours = self.seconds / 3600
            speed = self.seconds / max(now - self.started, 1e-9)  # audio seconds per wall second
            print(
                f"[tokenize] shards {self.done}/{self.total} | inputs {self.inputs} | audio {hours:.3f} h "
                f"| {speed / 3600:.4f} h/s ({speed:.0f}x real time) | encode actors {self.actors} "
                f"| failures {self.failures}",
                file=sys.stderr,
                flush=True,
            )


def tokenize(config: TokenizeConfig) -> RunSummary:
    """Run (or resume) the pipeline into `config.sink.path`; see README for the guarantees."""
    started = time.perf_counter()
    tokenizer = model_config(config)  # reads a checkpoint's header once
    identity = run_identity(config, tokenizer)
    if config.cluster.address:  # a cluster that is not there fails before the sink is touched
        init_ray(config.cluster)
    sink = DatasetSink.open(config.sink, config.fields, tokenizer, identity)
    summary = RunSummary(root=sink.root_uri)

    def plan():
        items = list_inputs(config.source)
        return make_units(items, config.sink.inputs_per_shard, int(config.sink.shard_input_mb * 2**20))

    units = sink.load_or_write_plan(plan)
    sink.remove_uncommitted()
    committed = sink.committed_units()
    pending = [u for u in units if u.index not in committed]
    summary.units, summary.units_resumed = len(units), len(units) - len(pending)
    log.info(
        "%d shards planned, %d already committed, %d to do", len(units), summary.units_resumed, len(pending)
    )

    if pending:
        init_ray(config.cluster)
        summary.nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
        actors, _ = encode_actor_count(config.cluster)
        summary.encode_actors = actors
        progress = Progress(len(pending), actors)
        for unit_summary in run_units(config, pending, sink, tokenizer.sample_rate):
            progress.update(unit_summary)
            summary.samples += unit_summary["samples"]
            summary.audio_seconds += unit_summary["audio_seconds"]
            summary.decode_nodes.add(unit_summary["decode_node"])
            summary.encode_nodes.add(unit_summary["encode_node"])
            summary.decode_busy_seconds += unit_summary["decode_seconds"]
            summary.encode_busy_seconds += unit_summary["encode_seconds"]

    sink.finalize(identity, source=config.source.path)
    # counted from what the dataset holds: exact for every source kind, resumed shards included
    # (a WebDataset shard is one planned item but many inputs)
    good, summary.failures = sink.input_counts()
    summary.inputs = good + summary.failures
    summary.failure_fraction = summary.failures / max(summary.inputs, 1)
    summary.ok = summary.failure_fraction <= config.cluster.max_failure_fraction
    summary.wall_seconds = time.perf_counter() - started
    sink.write_run_log(asdict(summary))
    return summary
