"""What every training recipe shares: where it trains (`TrainerConfig`, `training_device`,
`use_bf16`) and what it logs (`MetricsLog`; `AuditLog`, the keys of every batch). Recipes
import these from here, never from each other.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import torch

from losatok_storage.paths import is_url

log = logging.getLogger(__name__)


@dataclass
class TrainerConfig:
    num_workers: int = 1  # >1: Ray Train TorchTrainer with that many DDP workers
    use_gpu: bool = False
    address: str | None = None  # Ray cluster to join; None starts a local one when workers > 1
    strategy: str = "ddp"  # "ddp" replicates the model; "fsdp" shards it (models too large to replicate)
    bf16: bool | None = None  # autocast on CUDA by default
    cpus_per_worker: float | None = None  # CPUs each Ray Train worker reserves (None: Ray's default, 1)


def training_device(trainer: TrainerConfig) -> torch.device:
    """This process's CUDA device when the run asks for GPUs and one is there, else the CPU."""
    if trainer.use_gpu and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def use_bf16(trainer: TrainerConfig, device: torch.device) -> bool:
    """Whether to autocast to bfloat16: `trainer.bf16` when set, else on CUDA only."""
    return device.type == "cuda" if trainer.bf16 is None else trainer.bf16


class MetricsLog:
    """metrics.jsonl (appended, survives restarts) and TensorBoard, written by rank 0 only.

    A run resumed from the checkpoint of step `resumed_step` replays the steps after it, so
    their rows (written before the kill) are dropped first: every step appears once.
    """

    def __init__(self, out_dir: str, enabled: bool, resumed_step: int = 0) -> None:
        self.enabled = enabled and not is_url(out_dir)
        if enabled and not self.enabled:
            log.warning(
                "metrics are written to a local folder; set log_dir to keep them (out_dir is %s)", out_dir
            )
        if self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            os.makedirs(out_dir, exist_ok=True)
            path = os.path.join(out_dir, "metrics.jsonl")
            drop_rows_after(path, resumed_step)
            self.jsonl = open(path, "a")  # noqa: SIM115
            # TensorBoard's own resume rule: events from purge_step on are discarded
            self.board = SummaryWriter(
                os.path.join(out_dir, "tensorboard"), purge_step=resumed_step + 1 if resumed_step else None
            )

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self.jsonl.flush()
        for name, value in values.items():
            self.board.add_scalar(name, value, step)

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.board.close()


def drop_rows_after(path: str, step: int) -> None:
    """Rewrite the metrics file at `path` (atomically) without rows past `step` or torn lines."""
    if not os.path.exists(path):
        return
    kept, dropped = [], 0
    with open(path) as handle:
        for line in handle:
            try:
                keep = json.loads(line)["step"] <= step
            except (ValueError, KeyError, TypeError):  # the torn last line of a killed run
                keep = False
            kept += [line] if keep else []
            dropped += not keep
    if dropped:
        with open(path + ".tmp", "w") as handle:
            handle.writelines(kept)
        os.replace(path + ".tmp", path)


class AuditLog:
    """`audit/rank-R.jsonl`: one line per batch a rank trained on (`step`, `epoch`, `keys`).

    A local folder only, like the metrics. A run resumed at `resumed_step` drops the rows of the
    steps after it first (each rank its own file; rank 0 also the files of ranks the run no longer
    has), so every step's batch appears once per rank that trained it.
    """

    def __init__(self, out_dir: str, rank: int, world_size: int, resumed_step: int, enabled: bool) -> None:
        self.enabled = enabled and not is_url(out_dir)
        if enabled and not self.enabled:
            log.warning(
                "the audit is written to a local folder; set log_dir to keep it (out_dir is %s)", out_dir
            )
        if not self.enabled:
            return
        folder = os.path.join(out_dir, "audit")
        os.makedirs(folder, exist_ok=True)
        mine = os.path.join(folder, f"rank-{rank}.jsonl")
        drop_rows_after(mine, resumed_step)
        if rank == 0:
            for name in os.listdir(folder):
                number = name.removeprefix("rank-").removesuffix(".jsonl")
                if number.isdigit() and int(number) >= world_size:
                    drop_rows_after(os.path.join(folder, name), resumed_step)
        self.file = open(mine, "a")  # noqa: SIM115

    def write(self, step: int, epoch: int, keys: list[str]) -> None:
        if self.enabled:
            self.file.write(json.dumps({"step": step, "epoch": epoch, "keys": keys}) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.enabled:
            self.file.close()
