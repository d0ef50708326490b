"""Loading the published LoSATok checkpoints, and saving/loading our own.

Published files (DESIGN.md section 1.3):
- `semantic_encoder.pth`: {"state_dict": {encoder.*, bottleneck.*}} -> `model.semantic_encoder`;
- `losatok_kl1e-*.pth`: the whole model, with or without a "state_dict" wrapper -> `model`.
Every file is read with `torch.load(weights_only=True)`: no pickled code ever runs.

The semantic encoder's keys come in two layouts (`losatok.encoder_layouts`: the reference
repository's and MiDashengLM's), recognised from the keys and translated before loading. Neither
is verified against the real file, so loading is strict by default (every tensor of the file is
used, every parameter of ours filled; only buffers computed from the config may be absent),
names every missing, unexpected or mis-shaped key, and accepts a key map (old prefix -> new
prefix) for layouts that differ otherwise.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from losatok.config import LoSATokConfig, official
from losatok.encoder_layouts import LayoutError, adapt_encoder_state, computed_buffers
from losatok.errors import CheckpointError
from losatok.model import LoSATok

FORMAT = "losatok-checkpoint"
FORMAT_VERSION = 1
# a semantic_encoder.pth written by SemBo training: the published layout plus the config of the
# tokenizer whose encoder it holds (a key the published loader ignores)
SEMANTIC_FORMAT = "losatok-semantic-encoder"


@dataclass
class LoadReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "key: checkpoint (a, b) vs model (c, d)"
    layouts: dict[str, str] = field(default_factory=dict)  # encoder prefix -> layout it loaded from

    @property
    def encoder_layout(self) -> str | None:
        """The semantic encoder's layout ("reference" or "midashenglm"); None if the file had none."""
        return next(iter(self.layouts.values()), None)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def suggest_key_map(self) -> dict[str, str] | None:
        """A prefix rename that turns at least half of the unexpected keys into missing ones, if any."""
        missing = set(self.missing)
        votes: dict[tuple[str, str], int] = {}
        for key in self.unexpected:
            for target in missing:
                if key.endswith(target) and key != target:
                    pair = (key[: len(key) - len(target)], "")
                elif target.endswith(key) and key != target:
                    pair = ("", target[: len(target) - len(key)])
                else:
                    continue
                votes[pair] = votes.get(pair, 0) + 1
        if not votes:
            return None
        (old, new), count = max(votes.items(), key=lambda item: item[1])
        return {old: new} if (old or new) and count * 2 >= len(self.unexpected) else None

    def describe(self, limit: int = 20) -> str:
        parts = []
        for label, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("shape mismatch", self.mismatched),
        ):
            if keys:
                shown = ", ".join(keys[:limit]) + (
                    f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
                )
                parts.append(f"{len(keys)} {label} key(s): {shown}")
        hint = self.suggest_key_map()
        if hint:
            parts.append(f"the layouts differ by a prefix: try key_map={hint!r}")
        return "; ".join(parts) or "all keys matched"


def read_payload(path: str | os.PathLike) -> object:
    """The object a checkpoint file holds, read with weights_only=True."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as err:  # weights_only refuses pickled objects; corrupt zips fail here too
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err


def unwrap_state_dict(payload: object, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint payload, unwrapping a {"state_dict": ...} or {"model": ...} wrapper."""
    for wrapper in ("state_dict", "model"):
        if isinstance(payload, Mapping) and isinstance(payload.get(wrapper), Mapping):
            payload = payload[wrapper]
            break
    if not isinstance(payload, Mapping) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict of tensors")
    return dict(payload)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a published checkpoint file, wrapper removed."""
    return unwrap_state_dict(read_payload(path), path)


def remap_keys(
    state: Mapping[str, torch.Tensor], key_map: Mapping[str, str] | None
) -> dict[str, torch.Tensor]:
    """Rename keys by prefix: {"module.": ""} strips a DDP prefix; the longest matching prefix wins."""
    if not key_map:
        return dict(state)
    prefixes = sorted(key_map, key=len, reverse=True)
    out = {}
    for key, value in state.items():
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key_map[prefix] + key[len(prefix) :]
                break
        out[key] = value
    return out


def load_into(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    strict: bool = True,
    key_map: Mapping[str, str] | None = None,
    source: str = "state dict",
) -> LoadReport:
    """Copy `state` into `module`; strict mode raises `CheckpointError` naming every bad key.

    Semantic-encoder keys in MiDashengLM's layout are translated first (and LayerScale switched
    on when the file has it); buffers computed from the config may be absent from `state`.
    """
    state, report = compare_state(module, state, key_map, source)
    if strict and not report.ok:
        raise CheckpointError(f"{source} does not fit {type(module).__name__}: {report.describe()}")
    own = module.state_dict()
    usable = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    module.load_state_dict(usable, strict=False)
    return report


def compare_state(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    key_map: Mapping[str, str] | None = None,
    source: str = "state dict",
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """`state` in `module`'s key names (key map, encoder layout) and how it fits, loading nothing.

    Works on a weightless skeleton built on the meta device.
    """
    state = remap_keys(state, key_map)
    try:
        state, layouts = adapt_encoder_state(module, state)
    except LayoutError as err:
        raise CheckpointError(f"{source}: {err}") from None
    own = module.state_dict()
    report = LoadReport(
        missing=sorted(set(own) - set(state) - computed_buffers(module)),
        unexpected=sorted(set(state) - set(own)),
        mismatched=[
            f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
            for k in sorted(set(own) & set(state))
            if state[k].shape != own[k].shape
        ],
        layouts=layouts,
    )
    return state, report


def load_semantic_encoder(
    model: LoSATok, path: str | os.PathLike, strict: bool = True, key_map: Mapping[str, str] | None = None
) -> LoadReport:
    """Load a published `semantic_encoder.pth` (frozen encoder + SemBo) into `model.semantic_encoder`.

    Either encoder layout loads; `report.encoder_layout` says which one the file had.
    """
    report = load_into(model.semantic_encoder, read_state_dict(path), strict, key_map, source=str(path))
    model.freeze_semantic_encoder()
    return report


def load_published(
    path: str | os.PathLike,
    config: LoSATokConfig | None = None,
    strict: bool = True,
    key_map: Mapping[str, str] | None = None,
    semantic_encoder_path: str | os.PathLike | None = None,
) -> LoSATok:
    """Build a model of `config` (default: official) from a published whole-model checkpoint.

    `semantic_encoder_path` loads a separate `semantic_encoder.pth` over the encoder afterwards,
    for whole-model files saved without it.
    """
    model = LoSATok(config or official())
    load_into(model, read_state_dict(path), strict, key_map, source=str(path))
    return ready_for_use(model, semantic_encoder_path, strict)


def ready_for_use(
    model: LoSATok, semantic_encoder_path: str | os.PathLike | None = None, strict: bool = True
) -> LoSATok:
    """`model` with a separate `semantic_encoder.pth` loaded over its encoder (when given), the
    encoder frozen, in eval mode: the last step of every loader."""
    if semantic_encoder_path is not None:
        load_semantic_encoder(model, semantic_encoder_path, strict=strict)
    model.freeze_semantic_encoder()
    return model.eval()


def save_checkpoint(
    model: LoSATok, path: str | os.PathLike, extra: Mapping[str, object] | None = None
) -> None:
    """Write the model with its config, atomically (a crash never leaves half a file at `path`).

    The state dict keeps the published key names, so the file also loads with `load_published`.
    """
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "state_dict": model.state_dict(),
        "extra": dict(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_checkpoint(path: str | os.PathLike, strict: bool = True, payload: object = None) -> LoSATok:
    """Rebuild a model from a file written by `save_checkpoint`: the file alone defines it."""
    if payload is None:
        payload = read_payload(path)
    if not isinstance(payload, Mapping) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a {FORMAT} file (it has no config); load published checkpoints with load_published"
        )
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {payload['format_version']}; this software reads up to {FORMAT_VERSION}"
        )
    model = LoSATok(LoSATokConfig.from_dict(payload["config"]))
    load_into(model, payload["state_dict"], strict=strict, source=str(path))
    return ready_for_use(model, None)


def checkpoint_config(path: str | os.PathLike) -> LoSATokConfig | None:
    """The config stored in one of our checkpoints (or semantic-encoder files), read without
    loading its tensors (memory-mapped); None for a published file, which carries no config."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        payload = read_payload(path)  # not a zip-format file: read it whole (raises a clear error)
    if isinstance(payload, Mapping) and payload.get("format") in (FORMAT, SEMANTIC_FORMAT):
        return LoSATokConfig.from_dict(payload["config"])
    return None


def __getattr__(name: str) -> object:
    if name == "load_model":  # moved to losatok.loading (it dispatches to this module and losatok.hub)
        import warnings

        from losatok.loading import load_model

        warnings.warn(
            "losatok.checkpoint.load_model moved to losatok.loading.load_model (or `from losatok import "
            "load_model`); the old path goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return load_model
    raise AttributeError(f"module 'losatok.checkpoint' has no attribute {name!r}")
