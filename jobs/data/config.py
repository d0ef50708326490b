"""What a training run reads: one dataset or a weighted mixture, each with its filters.

`LoaderConfig` is also the schema of the Hydra `data:` group. `data.path` is the one-dataset
shorthand; `data.datasets` lists a mixture. Every field here is part of what an epoch visits
except the ones named in `PLANNING_KEYS`, which only shape batches: a resume may change those
(the rest of the epoch is planned again), not the others.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from losatok_storage.paths import is_url


@dataclass
class Filters:
    """Which samples of a dataset an epoch visits, decided from its index at plan time."""

    min_seconds: float | None = None  # keep samples at least this long
    max_seconds: float | None = None  # ... and at most this long
    languages: list[str] | None = None  # keep these `language` values only (None: any)
    splits: list[str] | None = None  # keep these `split` values only (None: any)
    source_contains: str | None = None  # keep samples whose `source` contains this text
    has_text: bool = False  # keep samples with a non-empty `text` or `caption`
    keys: list[str] | None = None  # keep exactly these keys
    keys_file: str | None = None  # ... or the keys listed in this file (one per line; local or s3://)
    exclude_keys_file: str | None = None  # drop the keys listed in this file (e.g. a held-out list)
    # audio measures (schema 1.3, `losatok_data.sample.SampleMetadata`): a sample without the
    # measure (a row written before 1.3; loudness of audio too short or silent) is left out
    min_rms_db: float | None = None  # keep samples with an RMS level of at least this (dBFS): no near-silence
    max_clipped_fraction: float | None = None  # ... at most this fraction of samples at full scale
    max_silent_fraction: float | None = None  # ... at most this fraction of 20 ms frames below -60 dBFS
    min_loudness_lufs: float | None = None  # ... integrated loudness (BS.1770) of at least this
    max_loudness_lufs: float | None = None  # ... and at most this

    def active(self) -> bool:
        """Whether any filter is set (a run without one keeps every sample). A bound of 0 is set."""
        values = [getattr(self, f.name) for f in dataclasses.fields(self)]
        return any(v is not None and v is not False for v in values)  # 0.0 == False, yet a bound

    def measure_bounds(self) -> list[tuple[str, str, str, float]]:
        """The measure filters set: (filter name, index column, "min" or "max", bound), in
        MEASURE_FILTERS order."""
        return [
            (name, column, kind, float(getattr(self, name)))
            for name, (column, kind) in MEASURE_FILTERS.items()
            if getattr(self, name) is not None
        ]


# the measure filters of `Filters`: field -> (the index column it bounds, "min": keep values at
# or above the bound, "max": at or below)
MEASURE_FILTERS = {
    "min_rms_db": ("rms_db", "min"),
    "max_clipped_fraction": ("clipped_fraction", "max"),
    "max_silent_fraction": ("silent_fraction", "max"),
    "min_loudness_lufs": ("loudness_lufs", "min"),
    "max_loudness_lufs": ("loudness_lufs", "max"),
}


@dataclass
class DatasetSpec:
    """One dataset of a mixture."""

    path: str = ""  # dataset root, local or s3://
    storage_options: dict[str, Any] = field(default_factory=dict)
    # visits of each sample per epoch: 2 = twice, 0.5 = half of its shards, another half the
    # next epoch (the shards rotate, so two epochs see every sample once)
    weight: float = 1.0
    filters: Filters = field(default_factory=Filters)
    shards: list[int] | None = None  # only these shard numbers; None: all
    generation: int | None = None  # pin the dataset as of this generation (see its card)
    name: str | None = None  # its label in metrics; default: the last part of the path


@dataclass  # not frozen: it is also the schema of the Hydra configs
class LoaderConfig:
    path: str = ""  # one dataset (shorthand for `datasets: [{path: ...}]`), local or s3://
    storage_options: dict[str, Any] = field(default_factory=dict)
    datasets: list[DatasetSpec] = field(default_factory=list)  # a mixture (then leave `path` empty)
    filters: Filters = field(default_factory=Filters)  # filters of the `path` dataset
    batch_frames: int = 25 * 60 * 4  # frame budget per batch: B x T_max <= this (4 min of audio)
    max_frames: int = 25 * 20  # random crops of at most 20 s keep attention cost bounded
    shuffle_buffer: int = 64  # samples held for shuffling; batches bucket by length within them
    semantic_field: str | None = None  # "semantic_low" or "semantic": targets of the alignment loss
    text_fields: tuple[str, ...] = ("text", "caption")  # the first present one conditions the sample
    normalize: bool = True  # per-channel (x - mean) / std from the datasets' cards
    # "pooled": one mean and std over the mixture (each card weighted by its frames x weight), the
    # model's latent space is one space and generation denormalises with it; "per_dataset": each
    # dataset by its own card (the checkpoint keeps every dataset's stats; generation uses the first's)
    stats: str = "pooled"
    workers: int = 0  # data-loader processes reading shards in parallel (0: read in the training process)
    shards: list[int] | None = None  # only these shard numbers of `path` (e.g. a held-out split); None: all
    generation: int | None = None  # pin the `path` dataset as of this generation (see its card)
    seed: int = 0
    # remote shards are kept on local disk (shared by a node's loader processes) up to this many
    # GB, least recently used evicted; 0 reads from the store every time
    cache_gb: float = 0.0
    cache_dir: str | None = None  # default: a folder under the system's temporary directory
    audit: bool = False  # write out_dir/audit/rank-R.jsonl: every batch's step, epoch and keys
    crop: str = "random"  # where a crop of max_frames starts: "random", or "start" (validation)
    # the checkpoint's epoch cannot continue under this config (other datasets, filters, weights
    # or seed): true starts the next epoch afresh instead of refusing
    restart_epoch: bool = False

    def specs(self) -> list[DatasetSpec]:
        """The datasets this config reads: `datasets`, or the one `path` with its own options."""
        if self.datasets:
            return list(self.datasets)
        return [
            DatasetSpec(
                path=self.path,
                storage_options=dict(self.storage_options),
                filters=self.filters,
                shards=self.shards,
                generation=self.generation,
            )
        ]

    def absolute(self) -> LoaderConfig:
        """A copy whose local dataset paths (and key lists) are absolute; a missing one raises
        FileNotFoundError naming its key (Ray Train workers run in another folder)."""

        def fix(value: str | None, key: str) -> str | None:
            if not value or is_url(value):
                return value
            path = os.path.abspath(os.path.expanduser(value))
            if not os.path.exists(path):
                raise FileNotFoundError(f"{key}={value}: no such file or folder ({path})")
            return path

        def spec(s: DatasetSpec, i: int) -> DatasetSpec:
            f = s.filters
            filters = dataclasses.replace(
                f,
                keys_file=fix(f.keys_file, f"data.datasets[{i}].filters.keys_file"),
                exclude_keys_file=fix(f.exclude_keys_file, f"data.datasets[{i}].filters.exclude_keys_file"),
            )
            return dataclasses.replace(s, path=fix(s.path, f"data.datasets[{i}].path"), filters=filters)

        return dataclasses.replace(
            self,
            path=fix(self.path, "data.path") or "",
            datasets=[spec(s, i) for i, s in enumerate(self.datasets)],
            filters=dataclasses.replace(
                self.filters,
                keys_file=fix(self.filters.keys_file, "data.filters.keys_file"),
                exclude_keys_file=fix(self.filters.exclude_keys_file, "data.filters.exclude_keys_file"),
            ),
        )


# the keys that only shape batches: a resume under other values re-plans the rest of the epoch
PLANNING_KEYS = ("batch_frames", "max_frames", "shuffle_buffer", "workers")
