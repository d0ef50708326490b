"""The one place where Hydra/OmegaConf configs become the pipeline's typed dataclasses.

Unknown keys fail here, naming the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import types
import typing
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from losatok.hub import variant_filename
from pipelines.config import (
    CUT_MODES,
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
    """Instantiate dataclass `cls` from plain `values`, refusing unknown keys and wrong types."""
    values = dict(values or {})
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown key(s) in {where}: {unknown}; known: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        values[name] = checked(value, hints[name], f"{where}.{name}")
    return cls(**values)


def checked(value: Any, hint: Any, name: str) -> Any:
    """`value` as the type `hint` asks for, or a ValueError naming the key and what it expects.

    Command-line overrides arrive as YAML scalars: `segment.max_seconds=abc` is a string, and
    must fail here, naming the key, rather than as a TypeError deep inside the run.
    """
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ValueError(f"{name} must be set (got null)")
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is bool and isinstance(value, bool):
            return value
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if origin is str and isinstance(value, str):
            return value
        if origin is dict and isinstance(value, dict):
            return value
        if origin is tuple and isinstance(value, (list, tuple)):
            return tuple(value)
    wanted = " or ".join(_type_name(o) for o in options if o is not type(None))
    raise ValueError(f"{name} must be {wanted}, got {value!r}")


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint) or hint
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        origin, "a mapping" if origin is dict else "a list"
    )


def build_tokenize_config(cfg: DictConfig | dict[str, Any]) -> TokenizeConfig:
    """Hydra's composed config -> TokenizeConfig, checking mandatory values and ranges."""
    if isinstance(cfg, DictConfig):
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise ValueError(f"missing required config value(s): {missing} (e.g. source.path=/data/corpus)")
        cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg = {k: v for k, v in cfg.items() if k != "hydra"}
    flags = {name: cfg.pop(name, False) for name in ("dry_run", "retry_failed")}
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
    parts = {"source": SourceConfig, "sink": SinkConfig, "model": ModelConfig, "segment": SegmentConfig}
    parts |= {"fields": FieldsConfig, "cluster": ClusterConfig}
    unknown = sorted(set(cfg) - set(parts))
    if unknown:
        raise ValueError(
            f"unknown top-level config group(s): {unknown}; known: {sorted(parts)}, dry_run, retry_failed"
        )
    built = {name: build(cls, cfg.get(name), name) for name, cls in parts.items()}
    config = TokenizeConfig(**built, **flags)
    check(config)
    return config


def check(config: TokenizeConfig) -> None:
    if not config.source.path:
        raise ValueError("source.path is required (a local folder, manifest file or s3:// URI)")
    if config.model.preset == "official" and not config.model.checkpoint:
        variant_filename(config.model.variant)  # the published weights come from the Hub: a known variant
    if config.segment.min_seconds < 0.04:
        raise ValueError("segment.min_seconds must be at least 0.04 s (one 640-sample token)")
    if config.segment.max_seconds < config.segment.min_seconds:
        raise ValueError("segment.max_seconds must not be below segment.min_seconds")
    if config.segment.cut not in (None, *CUT_MODES):
        raise ValueError(
            f"segment.cut must be one of {', '.join(CUT_MODES)} (or null), got {config.segment.cut!r}"
        )
    if not 0.0 <= config.segment.max_silent_fraction <= 1.0:
        raise ValueError(
            f"segment.max_silent_fraction must lie in [0, 1], got {config.segment.max_silent_fraction}"
        )
    if config.segment.loudness and importlib.util.find_spec("pyloudnorm") is None:
        raise ValueError("segment.loudness=true needs pyloudnorm: pip install 'losatok-pipelines[loudness]'")
    if not isinstance(config.sink.dedup, bool):
        raise ValueError(f"sink.dedup must be true or false, got {config.sink.dedup!r}")
    if config.fields.dtype not in ("float16", "float32"):
        raise ValueError(f"fields.dtype must be float16 or float32, got {config.fields.dtype!r}")
    if config.sink.lease_seconds <= 0:
        raise ValueError("sink.lease_seconds must be positive")
    if not 0.0 <= config.cluster.max_failure_fraction <= 1.0:
        raise ValueError("cluster.max_failure_fraction must lie in [0, 1]")
    positive = {
        "sink.inputs_per_shard": config.sink.inputs_per_shard,
        "sink.shard_input_mb": config.sink.shard_input_mb,
        "cluster.retries": config.cluster.retries,
        "cluster.retry_base_seconds": config.cluster.retry_base_seconds,
        "cluster.retry_max_seconds": config.cluster.retry_max_seconds,
        "cluster.retry_stall_seconds": config.cluster.retry_stall_seconds,
        "cluster.decode_cpus": config.cluster.decode_cpus,
        "cluster.window_seconds": config.cluster.window_seconds,
    }
    if config.cluster.max_frames_per_batch is not None:  # None: the device's default
        positive["cluster.max_frames_per_batch"] = config.cluster.max_frames_per_batch
    for name, value in positive.items():
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    for name, value in {
        "cluster.encode_actors": config.cluster.encode_actors,
        "cluster.num_cpus": config.cluster.num_cpus,
        "cluster.encode_threads": config.cluster.encode_threads,
    }.items():
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1 (or null), got {value}")
