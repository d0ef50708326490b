"""`LatentLoader`: the training loader with a position, for our recipes and for a user's own loop.

```
loader = LatentLoader(LoaderConfig(path="s3://latents/speech"), latent_dim=128)  # rank from torch.distributed
loader.load_state_dict(checkpoint["data"])   # optional: continue where a run stopped
for batch in loader:                         # the rest of the current epoch, then the next one
    loss = model_loss(batch) * batch.weight  # weight 0: padding that keeps ranks in step
    ...
    checkpoint["data"] = loader.state_dict() # on every rank (it gathers); save it on rank 0
```

The state follows the convention of torchdata's StatefulDataLoader: `state_dict()` after a
batch means "that batch is done". It records the epoch's progress independently of the layout
(units done, bitmaps of the units stopped inside), so `load_state_dict` resumes on any number
of ranks or loader workers, each remaining sample of the epoch exactly once and none seen
already. Under the same layout (ranks, workers, batch_frames, max_frames, shuffle_buffer) it
continues the very same batches; under another it plans the rest of the epoch again. Either
way no shard before the position is read, except the one each stream stopped inside.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from jobs.data.batches import Batch, LatentBatches
from jobs.data.config import Filters, LoaderConfig
from jobs.data.plan import Catalog, Progress, Report
from jobs.data.sources import DatasetMismatchError
from losatok_storage.retry import RetryPolicy

log = logging.getLogger(__name__)

STATE_FORMAT = "losatok-loader"
STATE_VERSION = 1


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


class LatentLoader:
    """Batches of one rank, epoch after epoch, with a resumable, elastic position.

    `rank` and `world_size` default to torch.distributed's when a process group exists (else one
    process). `config.workers` > 0 reads through a torch DataLoader of that many processes.
    """

    def __init__(
        self,
        config: LoaderConfig,
        latent_dim: int,
        rank: int | None = None,
        world_size: int | None = None,
        semantic_dim: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if rank is None or world_size is None:
            rank, world_size = (dist.get_rank(), dist.get_world_size()) if _distributed() else (0, 1)
        self.config = config
        self.batches = LatentBatches(config, latent_dim, rank, world_size, semantic_dim, retry)
        self.rank, self.world_size = rank, world_size
        self.names = [s.name for s in self.batches.sources]
        self._seen_before = np.zeros(len(self.names), np.int64)  # all ranks, up to the loaded state
        self._seen_here = np.zeros(len(self.names), np.int64)  # this rank, since then
        self._last_stream: int | None = None

    # --- iteration -------------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return self.batches.epoch

    @property
    def at_epoch_start(self) -> bool:
        """Nothing of the current epoch taken yet (not a resume part-way into it)."""
        return self.batches.segment == 0 and not any(self.batches.taken)

    def start_epoch(self, epoch: int) -> None:
        """Go to the start of `epoch` (e.g. the same batches again for a fixed evaluation)."""
        self.batches.start_epoch(epoch)
        self._last_stream = None

    def __len__(self) -> int:
        """Batches of the current epoch still to come on this rank (the same on every rank)."""
        return len(self.batches)

    def __iter__(self) -> Iterator[Batch]:
        """The rest of the current epoch; once it is through, the position moves to the next."""
        b = self.batches
        b.plans()  # planned here, once: loader workers receive the plan with the dataset
        workers = self.config.workers
        source = b if workers <= 0 else torch.utils.data.DataLoader(b, batch_size=None, num_workers=workers)
        for batch in source:
            b.taken[batch.stream] = batch.index + 1
            self._last_stream = batch.stream
            if batch.datasets:
                self._seen_here += np.bincount(batch.datasets, minlength=len(self.names))
            yield batch
        b.start_epoch(b.epoch + 1)
        self._last_stream = None

    # --- metrics and normalisation ---------------------------------------------------------------
    def samples_seen(self) -> dict[str, int]:
        """Samples trained on per dataset, all ranks, the whole run (a collective under DDP)."""
        here = torch.from_numpy(self._seen_here.copy())
        if _distributed() and self.world_size > 1:
            if dist.get_backend() == "nccl":
                here = here.cuda()
            dist.all_reduce(here)
        total = self._seen_before + here.cpu().numpy()
        return dict(zip(self.names, (int(v) for v in total), strict=True))

    def kept_counts(self) -> dict[str, int]:
        """Samples of this rank's shards in the current plan that the filters kept and left out."""
        self.batches.plans()
        return {"kept": self.batches.kept, "dropped": self.batches.dropped}

    @property
    def mean(self) -> np.ndarray | None:
        """The (C,) mean generation denormalises with (the pooled one, or the first dataset's)."""
        return self.batches.sources[0].mean

    @property
    def std(self) -> np.ndarray | None:
        return self.batches.sources[0].std

    def stats_by_dataset(self) -> dict[str, dict[str, list[float]]]:
        """Each dataset's normalisation (equal under `stats: pooled`), for the checkpoint."""
        return {
            s.name: {"mean": s.mean.tolist(), "std": s.std.tolist()}
            for s in self.batches.sources
            if s.mean is not None
        }

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation: (B, T, C) model space -> tokenizer latent space."""
        if self.mean is None:
            return latents
        return latents * torch.from_numpy(self.std) + torch.from_numpy(self.mean)

    # --- the position ----------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        """What an epoch visits: datasets, their selections, weights and filters, and the seed."""
        return {
            "seed": self.config.seed,
            "datasets": [
                {
                    "path": s.spec.path,
                    "generation": s.spec.generation,
                    "shards": s.spec.shards,
                    "weight": s.spec.weight,
                    "filters": asdict(s.spec.filters),
                }
                for s in self.batches.sources
            ],
        }

    def layout(self) -> dict[str, int]:
        """What shapes the batches but not the epoch's samples."""
        c = self.config
        return {
            "world_size": self.world_size,
            "streams": self.batches.streams_per_rank,
            "batch_frames": c.batch_frames,
            "max_frames": c.max_frames,
            "shuffle_buffer": c.shuffle_buffer,
        }

    def local_state(self) -> dict[str, Any]:
        """This rank's part of the state: batches taken per stream and what they consumed."""
        b = self.batches
        plans, units = b.plans(), b.units()
        reports = [plan.report(t, units, b.base) for plan, t in zip(plans, b.taken, strict=True)]
        return {
            "rank": self.rank,
            "taken": list(b.taken),
            "next_stream": self._next_stream(),
            "reports": [r.to_state() for r in reports],
            "seen": self._seen_here.tolist(),
        }

    def state_dict(self) -> dict[str, Any]:
        """The whole run's position. Under DDP every rank must call it (it gathers the ranks'
        parts); without a process group and with several ranks, use `merge_states`."""
        part = self.local_state()
        if self.world_size == 1:
            return self.merge_states([part])
        if not _distributed():
            raise RuntimeError(
                "state_dict() of one of several ranks needs a process group; gather every rank's "
                "local_state() and call merge_states()"
            )
        parts: list[Any] = [None] * self.world_size
        dist.all_gather_object(parts, part)
        return self.merge_states(parts)

    def merge_states(self, parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The state from every rank's `local_state()` (in any order)."""
        parts = sorted(parts, key=lambda p: p["rank"])
        if [p["rank"] for p in parts] != list(range(self.world_size)):
            raise ValueError(f"merge_states needs one part from each of ranks 0..{self.world_size - 1}")
        b = self.batches
        units = b.units()
        reports = [Report.from_state(r, units) for p in parts for r in p["reports"]]
        progress = b.base.merged(reports, units)
        seen = self._seen_before + np.sum([p["seen"] for p in parts], axis=0)
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "fingerprint": json.dumps(self.fingerprint(), sort_keys=True),
            "epoch": b.epoch,
            "segment": b.segment,
            "shards": [torch.from_numpy(c.shards.astype(np.int64)) for c in b.catalogs],
            "layout": self.layout(),
            "base": b.base.to_state(),
            "taken": [p["taken"] for p in parts],
            "next_stream": [p["next_stream"] for p in parts],
            "progress": progress.to_state(),
            "units_left": len(units) - len(progress.done),
            "seen": {name: int(v) for name, v in zip(self.names, seen, strict=True)},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state` (see the module docstring); refuses, in one line, a state whose
        epoch this config cannot continue, unless `restart_epoch` is set."""
        if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
            raise DatasetMismatchError(f"not a loader state of version {STATE_VERSION}: {str(state)[:80]}")
        b = self.batches
        self._seen_before = np.asarray([state["seen"].get(n, 0) for n in self.names], np.int64)
        self._seen_here[:] = 0
        saved, now = json.loads(state["fingerprint"]), self.fingerprint()
        for dataset in saved["datasets"]:  # a filter added since the state was saved was unset then
            dataset["filters"] = {**asdict(Filters()), **dataset["filters"]}
        if saved != now:
            if not self.config.restart_epoch:
                raise DatasetMismatchError(
                    f"the checkpoint's epoch {state['epoch']} read other data ({_difference(saved, now)}); "
                    f"set data.restart_epoch=true to start epoch {state['epoch'] + 1} afresh"
                )
            log.warning(
                "data changed (%s): starting epoch %d afresh", _difference(saved, now), state["epoch"] + 1
            )
            self.start_epoch(state["epoch"] + 1)
            return
        self.start_epoch(state["epoch"])
        b.catalogs = [
            self._pinned(s, numbers.numpy()) for s, numbers in zip(b.sources, state["shards"], strict=True)
        ]
        units = b.units()
        if state["layout"] == self.layout():  # the same batches, from where each stream stopped
            b.segment = state["segment"]
            b.base = Progress.from_state(state["base"], units)
            b.taken = list(state["taken"][self.rank])
            b.rotate = state["next_stream"][self.rank]
        else:
            b.segment = state["segment"] + 1
            b.base = Progress.from_state(state["progress"], units)
            log.info(
                "resuming epoch %d under another layout (%s, was %s): planning its %d units not done again",
                b.epoch, self.layout(), state["layout"], state["units_left"],
            )  # fmt: skip

    def _pinned(self, source: Any, numbers: np.ndarray) -> Catalog:
        """The source's catalog restricted to the shards an epoch started with."""
        now = source.catalog()
        where = {int(n): i for i, n in enumerate(now.shards)}
        missing = [int(n) for n in numbers if int(n) not in where]
        if missing:
            raise DatasetMismatchError(
                f"{source.spec.path}: shards {missing[:5]} of the checkpoint's epoch are no longer there"
            )
        pick = np.asarray([where[int(n)] for n in numbers], np.int64)
        return Catalog(now.shards[pick], now.samples[pick], now.seconds[pick])

    def _next_stream(self) -> int:
        """The stream the round robin serves next (the first, before any batch)."""
        b = self.batches
        if self._last_stream is None:
            return b.rotate
        plans, k = b.plans(), b.streams_per_rank
        for step in range(1, k + 1):
            s = (self._last_stream + step) % k
            if b.taken[s] < plans[s].batches:
                return s
        return 0


def _difference(saved: Any, now: Any, where: str = "data") -> str:
    """The first place two fingerprints differ, as `key: before -> now`."""
    if isinstance(saved, dict) and isinstance(now, dict):
        for key in sorted(set(saved) | set(now)):
            if saved.get(key) != now.get(key):
                name = "datasets" if key == "datasets" else key
                return _difference(saved.get(key), now.get(key), f"{where}.{name}")
    if isinstance(saved, list) and isinstance(now, list) and len(saved) == len(now):
        for i, (a, c) in enumerate(zip(saved, now)):
            if a != c:
                return _difference(a, c, f"{where}[{i}]")
    return f"{where}: {saved!r} -> {now!r}"
