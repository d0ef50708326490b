"""Configs of small pipeline runs for tests and benchmarks: the tiny model, seeded, on any source."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipelines.config import (
    ClusterConfig,
    FieldsConfig,
    ModelConfig,
    SinkConfig,
    SourceConfig,
    TokenizeConfig,
)


def tiny_run(
    source: str | Path,
    sink: str | Path,
    *,
    kind: str = "dir",
    inputs_per_shard: int = 256,
    fields: FieldsConfig | None = None,
    checkpoint: str | None = None,
    max_failure_fraction: float = 0.0,
    storage_options: dict[str, Any] | None = None,
    **cluster: Any,
) -> TokenizeConfig:
    """A run of the tiny tokenizer (seed 0, or `checkpoint`) from `source` into `sink`."""
    options = dict(storage_options or {})
    return TokenizeConfig(
        source=SourceConfig(kind=kind, path=str(source), storage_options=options),
        sink=SinkConfig(path=str(sink), storage_options=options, inputs_per_shard=inputs_per_shard),
        model=ModelConfig(preset="tiny", seed=0, checkpoint=checkpoint),
        fields=fields or FieldsConfig(),
        cluster=ClusterConfig(max_failure_fraction=max_failure_fraction, **cluster),
    )


def dataset_content(path: str | Path, groups: tuple[str, ...] = ("latent",)) -> dict[str, dict[str, Any]]:
    """Every sample's arrays of the dataset at `path` (those of its field `groups`), by key;
    asserts no key is indexed twice."""
    from losatok_data.reader import open_dataset

    reader = open_dataset(str(path))
    keys = reader.index().column("key").to_pylist()
    assert len(keys) == len(set(keys)), "a key is indexed twice"
    return {s.key: dict(s.arrays) for s in reader.iter_samples(groups=groups)}


def assert_same_dataset(left: str | Path, right: str | Path, groups: tuple[str, ...] = ("latent",)) -> None:
    """The two datasets hold the same keys with equal arrays (bit for bit)."""
    import numpy as np

    a, b = dataset_content(left, groups), dataset_content(right, groups)
    assert sorted(a) == sorted(b)
    for key in a:
        for field in a[key]:
            np.testing.assert_array_equal(a[key][field], b[key][field], err_msg=f"{key} {field}")


def alone(command: list[str]) -> list[str]:
    """`command` in a PID namespace of its own: it sees no other Ray on this machine, and `ray stop`
    there stops only the Ray it started. When it exits, the kernel ends whatever it left behind.

    Ray's `auto` address falls back to any gcs_server process it can see, and `ray stop` ends every
    Ray process of the machine; on a machine shared with other work, tests run both this way.
    As root the namespace is made directly; otherwise inside a user namespace mapped to root.
    """
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return ["unshare", *user, "--pid", "--fork", "--mount-proc", "--kill-child", *command]
