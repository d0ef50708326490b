"""The driver of a tokenization run: identity check, plan, resume, progress, card, verdict."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import asdict, dataclass, field, replace

import ray

from losatok import LoSATokConfig, preset
from losatok.checkpoint import checkpoint_config
from losatok.hub import OfficialFiles, fetch_official
from pipelines.config import TokenizeConfig
from pipelines.console import drop_benign_stderr
from pipelines.flow import encode_actor_count, init_ray, run_units
from pipelines.plan import RunIdentity, make_units
from pipelines.preflight import check_paths
from pipelines.sources import list_inputs
from pipelines.write import DatasetSink
from schemas.audio_shards import SkippedFiles
from schemas.card import TokenizerIdentity, sha256_file
from schemas.secrets import redact_text

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
    skipped: dict = field(default_factory=dict)  # files the listing left out: SkippedFiles.to_dict()
    ok: bool = True

    def describe(self) -> str:
        rate = self.audio_seconds / max(self.wall_seconds, 1e-9)
        busy = self.encode_busy_seconds / max(self.wall_seconds * max(self.encode_actors, 1), 1e-9)
        return (
            f"dataset {redact_text(self.root)}: {self.units} shards ({self.units_resumed} resumed), {self.inputs} inputs, "
            f"{self.samples} new samples, {self.audio_seconds / 3600:.3f} h of audio in {self.wall_seconds:.1f} s "
            f"({rate:.1f}x real time), {self.failures} failed inputs ({100 * self.failure_fraction:.1f} %); "
            f"encode actors busy {100 * busy:.0f} % of the run, decode {self.decode_busy_seconds:.1f} task-s"
            + (f"; {self.skipped_line()}" if self.skipped.get("total") else "")
        )

    def skipped_line(self) -> str:
        """ "skipped 2 files: 2 not audio (.txt), e.g. /c/a.txt" from `skipped`."""
        reasons = self.skipped.get("by_reason", {})
        parts = [f"{r['count']} {reason}, e.g. {', '.join(r['examples'])}" for reason, r in reasons.items()]
        return f"skipped {self.skipped['total']} files: " + "; ".join(parts)


def model_config(config: TokenizeConfig) -> LoSATokConfig:
    """The tokenizer's config: from our checkpoint when it carries one, else the named preset."""
    stored = checkpoint_config(config.model.checkpoint) if config.model.checkpoint else None
    return stored or preset(config.model.preset)


def published_files(config: TokenizeConfig) -> OfficialFiles | None:
    """model=official with no checkpoint: the Hub files it loads (fetched, or found in the cache)."""
    model = config.model
    if model.checkpoint or model.preset != "official":
        return None
    return fetch_official(model.variant, model.revision)


def run_identity(config: TokenizeConfig, tokenizer: LoSATokConfig) -> RunIdentity:
    model = config.model
    hub = published_files(config)
    checkpoint = str(hub.model.path) if hub else model.checkpoint
    encoder = model.semantic_encoder or (
        str(hub.semantic_encoder.path) if hub and hub.semantic_encoder else None
    )
    tokenizer = TokenizerIdentity(
        preset=model.preset,
        config_hash=tokenizer.config_hash(),
        checkpoint_sha256=sha256_file(checkpoint) if checkpoint else None,
        semantic_encoder_sha256=sha256_file(encoder) if encoder else None,
        checkpoint_source=hub.describe() if hub else None,
    )
    identity = asdict(tokenizer)
    if identity["checkpoint_source"] is None:  # datasets written before the field existed still resume
        del identity["checkpoint_source"]
    return RunIdentity(
        tokenizer=identity,
        seed=None if checkpoint else model.seed,
        fields=asdict(config.fields),
        segment=asdict(config.segment),
    )


class Progress:
    """The run's progress on stderr: one line rewritten in place on a terminal, or, when stderr
    goes to a file or a log collector, one new line per `log_every` seconds (and the last)."""

    def __init__(self, total_units: int, actors: int, log_every: float = 30.0) -> None:
        self.total, self.actors = total_units, actors
        self.terminal = sys.stderr.isatty()
        self.every = 1.0 if self.terminal else log_every
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
        last = self.done == self.total
        if now - self.last >= self.every or last:
            self.last = now
            hours = self.seconds / 3600
            speed = self.seconds / max(now - self.started, 1e-9)  # audio seconds per wall second
            line = (
                f"[tokenize] shards {self.done}/{self.total} | inputs {self.inputs} | audio {hours:.3f} h "
                f"| {speed / 3600:.4f} h/s ({speed:.0f}x real time) | encode actors {self.actors} "
                f"| failures {self.failures}"
            )
            if self.terminal:
                print(f"\r{line}\x1b[K", end="\n" if last else "", file=sys.stderr, flush=True)
            else:
                print(line, file=sys.stderr, flush=True)


def tokenize(config: TokenizeConfig) -> RunSummary:
    """Run (or resume) the pipeline into `config.sink.path`; see README for the guarantees."""
    started = time.perf_counter()
    check_paths(config)  # before anything is written: a bad path leaves no trace
    hub = published_files(config)
    if hub is not None:  # every encode actor loads exactly the commit the identity names
        config = replace(config, model=replace(config.model, revision=hub.model.revision))
    tokenizer = model_config(config)  # reads a checkpoint's header once
    identity = run_identity(config, tokenizer)
    # Listed before the sink is touched: a source without audio (EmptySourceError) leaves nothing.
    skipped = SkippedFiles()
    items = list_inputs(config.source, skipped)
    if skipped.total:
        log.warning("%s", skipped.describe())
    sink = DatasetSink.open(config.sink, config.fields, tokenizer, identity)
    summary = RunSummary(root=sink.root_uri, skipped=skipped.to_dict())

    def plan():
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
        with drop_benign_stderr():  # Ray's expected C++ error line about actor restarts
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
