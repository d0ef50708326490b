"""Running a training loop in this process or on the workers of a Ray Train TorchTrainer.

Every recipe is a function `loop(config) -> dict` that works alone and, when a process group
exists (Ray Train sets one up per worker: gloo on CPU, NCCL on GPU), as one DDP worker.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def run_workers(
    loop: Callable[[Any], dict[str, Any]],
    config: Any,
    num_workers: int,
    use_gpu: bool,
    address: str | None,
    out_dir: str,
    name: str,
) -> list[dict[str, Any]]:
    """`loop(config)` here when `num_workers <= 1`, else on that many Ray Train workers (DDP)."""
    if num_workers <= 1:
        return [loop(config)]
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        ray.init(address=address or "local", log_to_driver=False)

    def per_worker(_: dict) -> None:
        ray.train.report(loop(config))

    trainer = TorchTrainer(
        per_worker,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=RunConfig(name=name, storage_path=os.path.abspath(os.path.join(out_dir, "ray_train"))),
    )
    return [trainer.fit().metrics]


def write_worker_result(out_dir: str, result: dict[str, Any]) -> None:
    """`final-rank<r>.json` per worker of a distributed run, so replicas can be compared."""
    rank, world = rank_and_world()
    if world > 1 and "://" not in out_dir:
        with open(os.path.join(out_dir, f"final-rank{rank}.json"), "w") as handle:
            json.dump(result, handle)


def average_gradients(parameters) -> None:
    """All-reduce the gradients of `parameters` to their mean over workers (no-op alone).

    For recipes whose training step is not one `forward` call (the tokenizer calls `features`,
    `decode` and the discriminators separately), this is DDP's gradient sync done explicitly.
    """
    _, world = rank_and_world()
    if world == 1:
        return
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier()


def config_from_hydra(schema: type, cfg: Any) -> Any:
    """Hydra's composed config -> an instance of the dataclass `schema` (unknown keys fail)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    values = {k: v for k, v in cfg.items() if k not in ("hydra", "experiment")}
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))


def cli(run: Callable[[Any], list[dict[str, Any]]], config: Any) -> None:
    """Entry-point body: run, print the first worker's result as JSON; a bad dataset or config
    exits 2 with one line naming it instead of a traceback."""
    import logging
    import sys

    from jobs.data import DatasetMismatchError
    from schemas.errors import SchemaError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        results = run(config)
    except (FileNotFoundError, DatasetMismatchError, SchemaError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(results[0], default=str))
