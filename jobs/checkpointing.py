"""Training checkpoints: everything a restarted job needs to continue its loss curve exactly.

A checkpoint holds model, EMA, optimizer, scheduler, step, and the RNG states (python, numpy,
torch) plus whatever the recipe adds. It is written whole or not at all (local: temporary
name then rename; s3://: an object appears only when its upload completes), and `latest`
names the newest one only after that file is complete.
"""

from __future__ import annotations

import io
import random
from typing import Any

import numpy as np
import torch

from losatok_storage.filesystem import open_atomic, url_to_fs
from losatok_storage.retry import RetryPolicy

LATEST = "latest"


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain values, so the file loads with weights_only=True."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(
    directory: str,
    step: int,
    payload: dict[str, Any],
    storage_options: dict[str, Any] | None = None,
    retry: RetryPolicy | None = None,
) -> str:
    """Write `step-<step>.pt` under `directory` atomically, then point `latest` at it; each
    write is retried whole through transient storage errors per `retry`."""
    fs, root = url_to_fs(directory, storage_options, retry)
    name = f"step-{step:09d}.pt"
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with open_atomic(fs, f"{root}/{name}") as handle:
        handle.write(buffer.getvalue())
    with open_atomic(fs, f"{root}/{LATEST}") as handle:
        handle.write(name.encode())
    return f"{directory.rstrip('/')}/{name}"


def load_latest(
    directory: str, storage_options: dict[str, Any] | None = None, retry: RetryPolicy | None = None
) -> dict[str, Any] | None:
    """The newest complete checkpoint under `directory`, or None when there is none."""
    fs, root = url_to_fs(directory, storage_options, retry)
    pointer = f"{root}/{LATEST}"
    if not fs.exists(pointer):
        return None
    name = fs.cat_file(pointer).decode().strip()  # each read retried whole
    return torch.load(io.BytesIO(fs.cat_file(f"{root}/{name}")), map_location="cpu", weights_only=True)
