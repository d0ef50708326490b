"""The driver of a tokenization run: identity check, lease, then plan (append, resume), execute
(the Ray dataflow, progress), finalise (card, counts, verdict, run log)."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import ray

from losatok import LoSATokConfig, preset
from losatok.hub import OfficialFiles, fetch_official
from losatok_data.card import TokenizerIdentity, read_card, sha256_file
from losatok_data.layout import DatasetLayout
from losatok_input.rule import SkippedFiles
from losatok_input.sources import EmptySourceError, iter_inputs, nothing_found, source_label
from losatok_storage.retry import outage_in
from losatok_storage.secrets import redact_text
from pipelines.config import TokenizeConfig
from pipelines.dataflow import encode_actor_count, init_ray, run_units
from pipelines.lease import Lease, new_run_id
from pipelines.plan import RUN_FILE, AppendReport, Generation, PlanStore, RunIdentity, UnitRef
from pipelines.preflight import check_paths
from pipelines.records import DUPLICATE, SILENT, UnitSummary
from pipelines.sink import SinkDataset, field_set, resolve_url
from raycluster.console import drop_benign_stderr

log = logging.getLogger(__name__)


class StorageOutageError(RuntimeError):
    """The storage kept failing past the retry budget: the run stopped; rerunning resumes it."""


@dataclass
class RunSummary:
    root: str
    run_id: str = ""
    dry_run: bool = False  # nothing was written
    generation: int | None = None  # the generation this run added; None: the source held nothing new
    inputs_listed: int = 0  # inputs the source holds now
    inputs_new: int = 0  # of them, not yet in the dataset (planned by this run)
    inputs_retried: int = 0  # of inputs_new: failed before (transiently, or any with retry_failed)
    inputs_missing: int = 0  # planned earlier from this source, no longer listed (kept in the dataset)
    missing_examples: list[str] = field(default_factory=list)
    units: int = 0
    units_resumed: int = 0  # committed by an earlier run and skipped
    inputs: int = 0
    samples: int = 0  # written by this run
    audio_seconds: float = 0.0  # encoded by this run
    failures: int = 0  # inputs failed now (latest ledger row a failure), all runs
    transient_failures: int = 0  # of them, failed because the storage did (retried by the next run)
    transient_examples: list[str] = field(default_factory=list)
    recovered: int = 0  # inputs that failed in an earlier run and have samples now
    wall_seconds: float = 0.0
    decode_nodes: set[str] = field(default_factory=set)
    encode_nodes: set[str] = field(default_factory=set)
    nodes: dict[str, dict[str, float]] = field(default_factory=dict)  # node id -> resources
    encode_actors: int = 0
    decode_busy_seconds: float = 0.0  # summed over decode tasks
    encode_busy_seconds: float = 0.0  # summed over encode actors
    failure_fraction: float = 0.0
    skipped: dict = field(default_factory=dict)  # files the listing left out: SkippedFiles.to_dict()
    dropped: dict[str, int] = field(default_factory=dict)  # left out while decoding, by reason
    ok: bool = True
    started_at: float = 0.0  # epoch s the run began
    # when the run got where (s after started_at): "ray" (Ray up), "planned", "first_decode",
    # "first_encode" (the first window's work began), "first_commit", "last_commit"
    timeline: dict[str, float] = field(default_factory=dict)

    def mark(self, event: str, at: float | None = None) -> None:
        """Note `event` at epoch s `at` (now by default), keeping its earliest time."""
        seconds = round((at or time.time()) - self.started_at, 3)
        self.timeline[event] = min(seconds, self.timeline.get(event, seconds))

    def add_unit(self, unit: UnitSummary) -> None:
        """Count a row of the dataflow: a committed unit's samples and audio, and the nodes and
        busy times of the stages it (or one window of it: `UnitSummary.complete`) went through."""
        self.samples += unit.samples
        self.audio_seconds += unit.audio_seconds
        self.decode_nodes |= {unit.stages.decode_node} - {""}  # "": a unit assembled from windows
        self.encode_nodes |= {unit.stages.encode_node} - {""}
        self.decode_busy_seconds += unit.stages.decode_seconds
        self.encode_busy_seconds += unit.stages.encode_seconds
        for event, at in (
            ("first_decode", unit.stages.decode_started_at),
            ("first_encode", unit.stages.encode_started_at),
        ):
            if at:
                self.mark(event, at)
        if unit.complete:
            self.mark("first_commit")
            self.timeline["last_commit"] = round(time.time() - self.started_at, 3)
        for reason, count in unit.stages.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + count

    def describe_plan(self) -> str:
        verb = "would be" if self.dry_run else "planned"
        added = f"{verb} as generation {self.generation}" if self.generation else "(no new generation)"
        retried = (
            f" ({self.inputs_retried} of them failed before and are retried)" if self.inputs_retried else ""
        )
        line = (
            f"source: {self.inputs_listed} inputs listed, {self.inputs_new} new{retried} {added}, "
            f"{self.inputs_missing} no longer listed (kept)"
        )
        if self.missing_examples:
            line += f", e.g. {', '.join(self.missing_examples[:3])}"
        return line

    def describe(self) -> str:
        if self.dry_run:
            return (
                f"dry run, nothing written: {self.describe_plan()}; dataset {self.root}: "
                f"{self.units} shards planned, {self.units_resumed} committed, "
                f"{self.units - self.units_resumed} to do"
            )
        rate = self.audio_seconds / max(self.wall_seconds, 1e-9)
        busy = self.encode_busy_seconds / max(self.wall_seconds * max(self.encode_actors, 1), 1e-9)
        return (
            f"{self.describe_plan()}\n"
            f"dataset {redact_text(self.root)}: {self.units} shards ({self.units_resumed} resumed), {self.inputs} inputs, "
            f"{self.samples} new samples, {self.audio_seconds / 3600:.3f} h of audio in {self.wall_seconds:.1f} s "
            f"({rate:.1f}x real time), {self.failures} failed inputs ({100 * self.failure_fraction:.1f} %); "
            f"encode actors busy {100 * busy:.0f} % of the run, decode {self.decode_busy_seconds:.1f} task-s"
            + (f"; {self.skipped_line()}" if self.skipped.get("total") else "")
            + (f"; {self.dropped_line()}" if any(self.dropped.values()) else "")
            + (f"; {self.recovered} inputs failed before and have samples now" if self.recovered else "")
            + (
                f"; first shard committed {self.timeline['first_commit']:.1f} s in"
                if "first_commit" in self.timeline
                else ""
            )
        )

    def transient_line(self) -> str:
        examples = ", ".join(self.transient_examples[:3])
        return (
            f"{self.transient_failures} inputs could not be read because the storage kept failing "
            f"past the retry budget (e.g. {examples}); rerun the same command to retry them"
        )

    def dropped_line(self) -> str:
        """'left out 3 silent segments (segment.max_silent_fraction), 2 duplicate inputs (sink.dedup)'."""
        why = {SILENT: "segment.max_silent_fraction", DUPLICATE: "sink.dedup"}
        parts = [
            f"{count} {reason.replace('_', ' ')} ({why.get(reason, reason)})"
            for reason, count in sorted(self.dropped.items())
            if count
        ]
        return "left out " + ", ".join(parts)

    def skipped_line(self) -> str:
        """ "skipped 2 files: 2 not audio (.txt), e.g. /c/a.txt" from `skipped`."""
        reasons = self.skipped.get("by_reason", {})
        parts = [f"{r['count']} {reason}, e.g. {', '.join(r['examples'])}" for reason, r in reasons.items()]
        return f"skipped {self.skipped['total']} files: " + "; ".join(parts)


def model_config(config: TokenizeConfig) -> LoSATokConfig:
    """The tokenizer's config: from our checkpoint when it carries one, else the named preset."""
    if not config.model.checkpoint:
        return preset(config.model.preset)
    from losatok.checkpoint import checkpoint_config  # torch, only to read a checkpoint's header

    stored = checkpoint_config(config.model.checkpoint)
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
        segment={k: v for k, v in asdict(config.segment).items() if k != "loudness"},  # a measure only
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

    def update(self, unit: UnitSummary) -> None:
        self.done += 1
        self.inputs += unit.inputs
        self.failures += unit.failures
        self.seconds += unit.audio_seconds
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
    """Run (append to, or resume) the dataset at `config.sink.path`; see docs/tokenizing.md for the guarantees.

    Holding the dataset's lease, a `TokenizeRun` plans, executes and finalises the run.
    Raises LeaseHeldError at once when another live run writes the dataset.
    """
    started, started_at = time.perf_counter(), time.time()
    check_paths(config)  # before anything is written: a bad path leaves no trace
    config = pin_published_revision(config)
    tokenizer = model_config(config)  # reads a checkpoint's header once
    identity = run_identity(config, tokenizer)
    run_id = new_run_id()
    refuse_empty_source(config)
    if config.dry_run:
        return plan_only(config, identity, run_id)
    if config.cluster.address:  # a cluster that is not there fails before the sink is touched
        init_ray(config.cluster)
    url, identity = resolve_url(config.sink, identity)  # an unset segment.cut decided, too
    config = replace(config, segment=replace(config.segment, cut=identity.segment["cut"]))
    layout = DatasetLayout(url, config.sink.storage_options, config.cluster.retry_policy())
    with Lease(layout.fs, layout.root, run_id, config.sink.lease_seconds).held() as lease:
        dataset = SinkDataset.open(
            config.sink, config.fields, tokenizer, identity, config.cluster.retry_policy()
        )
        run = TokenizeRun(config, tokenizer, identity, run_id, dataset, lease)
        run.summary.started_at = started_at
        plan_while_ray_starts(run, config)
        run.execute()
        return run.finalise(started)


def plan_while_ray_starts(run: TokenizeRun, config: TokenizeConfig) -> None:
    """`run.plan()` on a thread while Ray starts (or is joined) on this one: listing a large
    corpus or one on S3 takes as long as Ray's start or longer (4 to 6 s on this 2-core machine),
    and they need nothing of each other. Ray must start on the main thread (started on another,
    its tasks never ran here). The plan is written whole, or has failed, before this returns, so
    the lease is never given up under a half-written plan; its error is raised here. A rerun of
    a finished dataset starts Ray for nothing, which costs a few seconds once."""
    failed: list[BaseException] = []

    def plan() -> None:
        try:
            run.plan()
        except BaseException as error:  # raised on the main thread below
            failed.append(error)

    planner = threading.Thread(target=plan, name="plan", daemon=True)
    planner.start()
    try:
        init_ray(config.cluster)
        run.summary.mark("ray")
    finally:
        planner.join()
    if failed:
        raise failed[0]


def pin_published_revision(config: TokenizeConfig) -> TokenizeConfig:
    """`config` with the Hub commit of the published weights it loads (if any) as the model's
    revision: every encode actor loads exactly the commit the identity names."""
    hub = published_files(config)
    if hub is None:
        return config
    return replace(config, model=replace(config.model, revision=hub.model.revision))


def refuse_empty_source(config: TokenizeConfig) -> None:
    """A source without audio is refused before the sink is touched (a peek: the listing streams)."""
    skipped = SkippedFiles()
    if next(iter_inputs(config.source, skipped), None) is None:
        raise EmptySourceError(nothing_found(config.source, skipped))


class TokenizeRun:
    """One run over a dataset whose lease it holds: `plan`, `execute`, `finalise`, in that order,
    each filling its part of `summary`."""

    def __init__(
        self,
        config: TokenizeConfig,
        tokenizer: LoSATokConfig,
        identity: RunIdentity,
        run_id: str,
        dataset: SinkDataset,
        lease: Lease,
    ) -> None:
        self.config, self.tokenizer, self.identity, self.run_id = config, tokenizer, identity, run_id
        self.dataset, self.lease = dataset, lease
        self.summary = RunSummary(root=dataset.root_uri, run_id=run_id)
        self.skipped = SkippedFiles()  # files the listing left out, and what tars hold besides audio
        self.generations: list[Generation] = []  # the dataset's, this run's included
        self.pending: list[UnitRef] = []  # units without a committed shard
        self.left_out: dict[str, str] = {}  # inputs failed before, left out whole now: key -> why

    def plan(self) -> None:
        """Clear what a killed run left, append a generation of the inputs not yet in the dataset
        (and of failed ones to retry), and find the units still to do."""
        dataset, summary = self.dataset, self.summary
        dataset.remove_uncommitted()
        store = dataset.plan()
        # inputs that failed for a transient reason (every failed input with retry_failed) and
        # are not in a unit still to do are planned again, into new units
        committed = dataset.committed_units()  # listed once: nothing commits while planning
        earlier = store.generations()
        retry = dataset.inputs_to_retry(store, store.pending(committed, earlier), self.config.retry_failed)
        report = append(store, self.config, self.run_id, skipped=self.skipped, retry=retry)
        summary.skipped = self.skipped.to_dict()
        if self.skipped.total:
            log.warning("%s", self.skipped.describe())
        self.generations = store.generations()
        self.pending = store.pending(committed, self.generations)
        record_plan(summary, report, self.generations, self.pending)
        summary.mark("planned")
        log.info("%s", summary.describe_plan())
        log.info(
            "%d shards planned, %d already committed, %d to do",
            summary.units,
            summary.units_resumed,
            len(self.pending),
        )

    def execute(self) -> None:
        """Stream the units still to do through the Ray dataflow, adding each committed one to
        the summary. Stops with StorageOutageError when the storage failed past the retry budget
        (a stage's call, or every input of a unit), LeaseLostError when the lease was taken over."""
        if not self.pending:
            return
        config, summary = self.config, self.summary
        init_ray(config.cluster)
        summary.nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
        actors, _ = encode_actor_count(config.cluster)
        summary.encode_actors = actors
        progress = Progress(len(self.pending), actors)
        committer = self.dataset.committer()
        with drop_benign_stderr(), stop_on_outage():  # Ray's expected C++ error line about actor restarts
            seen = self.dataset.content_digests() if config.sink.dedup else None
            # an input failed before and left out whole now (silent, a copy) is resolved: finalise says so
            leaving = config.sink.dedup or config.segment.max_silent_fraction < 1.0
            failed_before = (
                {row["key"] for row in self.dataset.open_failures() if row["key"]} if leaving else set()
            )
            done: set[int] = set()  # units committed; two commit actors may both assemble one
            for unit in run_units(config, self.pending, committer, self.tokenizer.sample_rate, seen=seen):
                self.lease.check()
                if unit.complete and unit.unit in done:
                    continue
                if unit.complete:
                    done.add(unit.unit)
                    progress.update(unit)
                if unit.inputs and unit.transient >= unit.inputs:
                    raise StorageOutageError(
                        f"storage outage: no input of shard {unit.unit} could be read "
                        f"within the retry budget (cluster.retries={config.cluster.retries}); the run "
                        "stopped; rerun the same command to resume and retry them"
                    )
                summary.add_unit(unit)
                self.skipped.update(unit.stages.skipped)  # inside tars, found by decoding
                self.left_out |= {k: why for k, why in unit.stages.left_out.items() if k in failed_before}
        if self.skipped.total > summary.skipped.get("total", 0):
            summary.skipped = self.skipped.to_dict()
            log.warning("%s", self.skipped.describe())
        if any(summary.dropped.values()):
            log.info("%s", summary.dropped_line())

    def finalise(self, started: float) -> RunSummary:
        """Rebuild the card from what is committed, count the dataset's inputs, judge the run and
        keep its log in `runs/`. `started`: `time.perf_counter()` when the run began."""
        dataset, summary = self.dataset, self.summary
        finaliser = dataset.finaliser()
        self.lease.check()
        with stop_on_outage():
            before = {row["key"] or row["location"] for row in dataset.open_failures()}
            dataset.record_recoveries(self.run_id, self.left_out)
            dataset.remove_parts()  # windows of units committed by now (pipelines.commit)
            finaliser.rebuild_card(self.identity, self.generations)
            failed = dataset.open_failures()
            summary.recovered = len(before - {row["key"] or row["location"] for row in failed})
            transient = [row["location"] for row in failed if row["transient"]]
            summary.transient_failures, summary.transient_examples = len(transient), transient[:3]
            # counted from what the dataset holds: exact for every source kind, resumed shards
            # included (a WebDataset shard is one planned item but many inputs)
            good, summary.failures = finaliser.input_counts()
        summary.inputs = good + summary.failures
        summary.failure_fraction = summary.failures / max(summary.inputs, 1)
        summary.ok = summary.failure_fraction <= self.config.cluster.max_failure_fraction and not transient
        summary.wall_seconds = time.perf_counter() - started
        dataset.write_run_log(asdict(summary))
        return summary


@contextlib.contextmanager
def stop_on_outage() -> Iterator[None]:
    """Turn a storage outage past the retry budget (raised here or in a Ray task) into one
    StorageOutageError line: the run stops, and rerunning the command resumes it."""
    try:
        yield
    except StorageOutageError:
        raise
    except Exception as err:
        outage = outage_in(err)
        if outage is None:
            raise
        raise StorageOutageError(
            f"storage outage: {outage}; the run stopped; rerun the same command to resume"
        ) from None


def append(
    store: PlanStore,
    config: TokenizeConfig,
    run_id: str,
    dry_run: bool = False,
    skipped: SkippedFiles | None = None,
    retry: np.ndarray | None = None,
) -> AppendReport:
    """List the source afresh against the stored plan (see PlanStore.append); files the listing
    leaves out are counted in `skipped`."""
    return store.append(
        iter_inputs(config.source, skipped),
        source=source_label(config.source),
        source_kind=config.source.kind,
        run_id=run_id,
        inputs_per_shard=config.sink.inputs_per_shard,
        shard_input_bytes=int(config.sink.shard_input_mb * 2**20),
        dry_run=dry_run,
        retry=retry,
    )


def record_plan(
    summary: RunSummary, report: AppendReport, generations: list[Generation], pending: list[UnitRef]
) -> None:
    summary.generation = report.generation.number if report.generation else None
    summary.inputs_listed, summary.inputs_new = report.inputs_listed, report.inputs_new
    summary.inputs_retried = report.inputs_retried
    summary.inputs_missing, summary.missing_examples = report.inputs_missing, report.missing_examples
    summary.units = sum(g.units for g in generations)
    summary.units_resumed = summary.units - len(pending)


def plan_only(config: TokenizeConfig, identity: RunIdentity, run_id: str) -> RunSummary:
    """What a run would do (new inputs, missing ones, shards to do), reading only: nothing is written."""
    url, _ = resolve_url(config.sink, identity)
    layout = DatasetLayout(url, config.sink.storage_options, config.cluster.retry_policy())
    legacy_source = read_card(layout).source if layout.fs.exists(layout.card_path) else None
    store = PlanStore(layout.fs, layout.root, legacy_source)
    generations = store.generations()
    committed = set(layout.committed_shards())
    retry = None
    if layout.fs.exists(f"{layout.root}/{RUN_FILE}"):  # a dataset to retry failed inputs of
        tokenizer = model_config(config)
        dataset = SinkDataset(
            layout, field_set(config.fields, tokenizer), tokenizer.sample_rate, tokenizer.frame_rate
        )
        retry = dataset.inputs_to_retry(store, store.pending(committed, generations), config.retry_failed)
    report = append(store, config, run_id, dry_run=True, retry=retry)
    summary = RunSummary(root=layout.url, run_id=run_id, dry_run=True)
    record_plan(summary, report, generations, store.pending(committed, generations))
    summary.units += report.units_new  # the units this run would add
    summary.generation = len(generations) + 1 if report.inputs_new else None
    return summary
