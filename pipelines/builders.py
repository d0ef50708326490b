"""The one place where Hydra/OmegaConf configs become the pipeline's typed dataclasses.

Unknown keys fail here, naming the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from pipelines.config import (
    ClusterConfig,
    FieldsConfig,
    ModelConfig,
    SegmentConfig,
    SinkConfig,
    SourceConfig,
    TokenizeConfig,
)

T = TypeVar("T")


def build(cls: type[T], values: dict[str, Any] | None, where: str) -> T:
    """Instantiate dataclass `cls` from plain `values`, refusing unknown keys."""
    values = dict(values or {})
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown key(s) in {where}: {unknown}; known: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if isinstance(value, list) and typing.get_origin(hints[name]) is tuple:
            values[name] = tuple(value)
    return cls(**values)


def build_tokenize_config(cfg: DictConfig | dict[str, Any]) -> TokenizeConfig:
    """Hydra's composed config -> TokenizeConfig, checking mandatory values and ranges."""
    if isinstance(cfg, DictConfig):
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise ValueError(f"missing required config value(s): {missing} (e.g. source.path=/data/corpus)")
        cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg = {k: v for k, v in cfg.items() if k != "hydra"}
    dry_run = cfg.pop("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ValueError(f"dry_run must be true or false, got {dry_run!r}")
    parts = {"source": SourceConfig, "sink": SinkConfig, "model": ModelConfig, "segment": SegmentConfig}
    parts |= {"fields": FieldsConfig, "cluster": ClusterConfig}
    unknown = sorted(set(cfg) - set(parts))
    if unknown:
        raise ValueError(f"unknown top-level config group(s): {unknown}; known: {sorted(parts)} and dry_run")
    built = {name: build(cls, cfg.get(name), name) for name, cls in parts.items()}
    config = TokenizeConfig(**built, dry_run=dry_run)
    check(config)
    return config


def check(config: TokenizeConfig) -> None:
    if not config.source.path:
        raise ValueError("source.path is required (a local folder, manifest file or s3:// URI)")
    if config.model.preset == "official" and not config.model.checkpoint:
        raise ValueError(
            "model=official needs model.checkpoint=PATH (a published losatok_kl1e-*.pth or ours)"
        )
    if config.segment.min_seconds < 0.04:
        raise ValueError("segment.min_seconds must be at least 0.04 s (one 640-sample token)")
    if config.segment.max_seconds < config.segment.min_seconds:
        raise ValueError("segment.max_seconds must not be below segment.min_seconds")
    if config.fields.dtype not in ("float16", "float32"):
        raise ValueError(f"fields.dtype must be float16 or float32, got {config.fields.dtype!r}")
    if config.sink.lease_seconds <= 0:
        raise ValueError("sink.lease_seconds must be positive")
    if not 0.0 <= config.cluster.max_failure_fraction <= 1.0:
        raise ValueError("cluster.max_failure_fraction must lie in [0, 1]")
