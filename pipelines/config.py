"""Typed configuration of the tokenization pipeline, one dataclass per component.

Hydra builds these in `pipelines.builders` and nothing below it sees a config object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from losatok_input.config import SourceConfig
from losatok_storage.retry import RetryPolicy


@dataclass(frozen=True)
class ModelConfig:
    preset: str = "tiny"  # "official": published weights (Hub, or `checkpoint`); "tiny" runs anywhere
    checkpoint: str | None = None  # our checkpoint or a published losatok_kl1e-*.pth
    variant: str = "kl1e-3"  # official without checkpoint: which published file (kl1e-3 or kl1e-2)
    revision: str | None = None  # ... at which Hub revision (branch, tag or commit; None: main)
    semantic_encoder: str | None = None  # optional published semantic_encoder.pth loaded over it
    seed: int = 0  # initialises an untrained model identically in every actor (no checkpoint)
    bf16: bool | None = None  # autocast on the accelerator; None = on CUDA only


CUT_MODES = ("pause", "equal")  # SegmentConfig.cut


@dataclass(frozen=True)
class SegmentConfig:
    max_seconds: float = 30.0  # longer inputs are cut into segments no longer than this (see `cut`)
    min_seconds: float = 0.5  # an input shorter than this is a failure ("too short"), not a sample
    # where a long input is cut: "pause" (the quietest stretch in the last third before
    # max_seconds; bench/pause_cuts.py) or "equal" (near-equal lengths wherever the words are).
    # None: the mode the dataset was written with (equal before it was recorded), pause for a new one
    cut: str | None = None
    # a segment silent over more than this fraction of its 20 ms frames is left out and counted
    # (pipelines.measures.SILENCE_DB); 1.0 keeps every segment, digital silence included
    max_silent_fraction: float = 1.0
    # also each segment's integrated loudness (ITU-R BS.1770, pyloudnorm: the `loudness` extra)
    # as `loudness_lufs`; ~4x a 16 kHz wav's decode cost (bench/quality_cost.py). A measure
    # only, so not part of the dataset's identity: a run may turn it on or off
    loudness: bool = False


@dataclass(frozen=True)
class FieldsConfig:
    logvar: bool = False
    semantic_low: bool = True
    semantic: bool = False  # 1280-dim targets: 10x the latent's size, written to their own shard set
    dtype: str = "float16"  # storage dtype of every field


@dataclass(frozen=True)
class SinkConfig:
    path: str = "out/dataset"  # local path or s3:// URI of the dataset root
    storage_options: dict[str, Any] = field(default_factory=dict)
    inputs_per_shard: int = 256  # a shard is one unit of work, committed whole (one file's spans: up to 4x)
    shard_input_mb: float = 512.0  # ... or fewer inputs when their files add up to this many MB
    force_new_version: bool = False  # a different tokenizer writes <path>-vN instead of refusing
    # one writer per dataset: the lease is renewed every lease_seconds / 4; a holder on another
    # host that has not renewed it for lease_seconds is taken for dead (same host: its pid is checked)
    lease_seconds: float = 120.0
    # skip an input whose decoded audio is already in the dataset (an earlier run's sample, or
    # an input of this run claimed first), counted in the run summary; not part of the identity
    dedup: bool = False


@dataclass(frozen=True)
class ClusterConfig:
    address: str | None = None  # None: start a local Ray; "auto" or host:port joins a cluster
    node_ip_address: str | None = None  # this driver's address in the cluster, on hosts with several
    num_cpus: int | None = None  # local Ray only
    encode_actors: int | None = None  # None: one per GPU, or 1 on a CPU-only cluster
    encode_resources: dict[str, float] = field(default_factory=dict)  # e.g. {"accelerator": 1} in tests
    decode_cpus: float = 1.0  # CPUs a decode task reserves
    encode_threads: int | None = None  # CPU-only encode: torch threads per actor (None: the node's cores)
    # encode batch budget: B x T_max <= this, in latent frames (25 Hz); None: 15000 on a GPU,
    # 750 on CPU (pipelines.encode.batch_budget)
    max_frames_per_batch: int | None = None
    # a unit travels from decode to commit in windows of about this much audio, and an input
    # longer than this is decoded to local disk (TMPDIR: 230 MB per hour) rather than held:
    # each process's memory is bounded by a few windows, whatever the inputs' lengths
    # (bench/long_input_memory.py; docs/tokenizing.md). Shorter units go whole, as one window
    window_seconds: float = 600.0
    # a local Ray's dashboard (Ray's web UI), off unless asked for: it adds 1-2 s to a run's
    # start and keeps processes busy beside the work (bench/vs_loop.py --fixed --cpu --set
    # cluster.dashboard=true); it listens on loopback unless dashboard_host says otherwise
    dashboard: bool = False
    dashboard_host: str = "127.0.0.1"
    max_failure_fraction: float = 0.05  # the run exits non-zero past this fraction of failed inputs
    # every storage call (reads, listings, writes, moves, existence checks) retries a transient
    # error with exponential backoff and jitter: `retries` attempts, the first wait
    # retry_base_seconds, doubling, each at most retry_max_seconds (defaults: ~60 s in all).
    # Past that, an input read is a transient failure, retried by the next run; a commit or a
    # listing stops the run (exit 1), and rerunning the command resumes it
    retries: int = 8
    retry_base_seconds: float = 0.5
    retry_max_seconds: float = 20.0
    # an attempt that neither completes nor fails in this long (plus 1 s per MiB it moves) is
    # abandoned and retried: a store that takes a request and never answers stalls no run
    retry_stall_seconds: float = 120.0

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            attempts=self.retries,
            base_delay=self.retry_base_seconds,
            max_delay=self.retry_max_seconds,
            stall_seconds=self.retry_stall_seconds,
        )


@dataclass(frozen=True)
class TokenizeConfig:
    source: SourceConfig
    sink: SinkConfig = field(default_factory=SinkConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    fields: FieldsConfig = field(default_factory=FieldsConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    dry_run: bool = False  # list the source against the dataset, print what a run would do, write nothing
    # plan every failed input again (not only those that failed for a transient reason) into
    # new shards; committed shards are never rewritten
    retry_failed: bool = False
