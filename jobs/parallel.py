"""How a model is spread over the workers of a job, and how its state is gathered and restored.

"ddp" replicates the model on every worker (DistributedDataParallel). "fsdp" shards every DiT
block and the root across workers (PyTorch's FSDP2 `fully_shard`), for models too large to
replicate; the EMA copy is sharded the same way. Checkpoints always hold full, unsharded state
dicts, so a file written under FSDP loads into a plain DiT for generation, and a run
checkpointed under DDP (or on one process) resumes under FSDP, on any number of workers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.optim.swa_utils import AveragedModel

STRATEGIES = ("ddp", "fsdp")


def _shard(model: nn.Module) -> None:
    from torch.distributed.fsdp import fully_shard

    for block in model.blocks:  # one all-gather per block keeps peak memory at one block's weights
        fully_shard(block)
    fully_shard(model)


def distribute(model: nn.Module, ema: AveragedModel, strategy: str, device: torch.device) -> nn.Module:
    """The module to run forward/backward on; call once a process group exists, before the optimizer."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown trainer.strategy {strategy!r}; expected one of {STRATEGIES}")
    if strategy == "fsdp":
        _shard(model)
        _shard(ema.module)
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def gather_state(
    model: nn.Module, ema: AveragedModel, optimizer: torch.optim.Optimizer, sharded: bool
) -> dict[str, Any]:
    """Full model, EMA and optimizer state dicts. Under FSDP every worker must call this (collective)."""
    if not sharded:
        return {"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict()}
    full = StateDictOptions(full_state_dict=True, cpu_offload=True)
    ema_state = {f"module.{k}": v for k, v in get_model_state_dict(ema.module, options=full).items()}
    ema_state["n_averaged"] = ema.n_averaged.detach().cpu()
    return {
        "model": get_model_state_dict(model, options=full),
        "ema": ema_state,
        "optimizer": get_optimizer_state_dict(model, optimizer, options=full),
    }


def restore_state(
    model: nn.Module,
    ema: AveragedModel,
    optimizer: torch.optim.Optimizer,
    payload: dict[str, Any],
    sharded: bool,
) -> None:
    """Load full state dicts written by `gather_state` (every worker reads the same file)."""
    if not sharded:
        model.load_state_dict(payload["model"])
        ema.load_state_dict(payload["ema"])
        optimizer.load_state_dict(payload["optimizer"])
        return
    full = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, payload["model"], options=full)
    ema_state = {k.removeprefix("module."): v for k, v in payload["ema"].items() if k.startswith("module.")}
    set_model_state_dict(ema.module, ema_state, options=full)
    ema.n_averaged.copy_(payload["ema"]["n_averaged"])
    set_optimizer_state_dict(model, optimizer, _by_name(model, payload["optimizer"]), options=full)


def _by_name(model: nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state dict keyed by parameter names, as FSDP's loader takes it. One written
    without FSDP (`optimizer.state_dict()`) numbers the trainable parameters in order instead:
    renamed here, so a run checkpointed under DDP or on one process resumes under FSDP."""
    if not state["state"] or all(isinstance(k, str) for k in state["state"]):
        return state
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]
    return {"state": {names[i]: v for i, v in state["state"].items()}, "param_groups": groups}


def full_weights(model: nn.Module, sharded: bool) -> dict[str, torch.Tensor]:
    """The unsharded state dict on every worker (collective under FSDP), e.g. to compare replicas."""
    if not sharded:
        return model.state_dict()
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
