"""Checks that run before a tokenization run writes anything: a bad path fails in one line.

A run that cannot start must leave nothing behind (no `run.json` in a fresh sink folder), so
the source, the sink and the model files are checked first, each error naming the key, the
path and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path

from losatok_storage.filesystem import url_to_fs
from losatok_storage.paths import is_remote, is_url
from pipelines.config import TokenizeConfig


def check_paths(config: TokenizeConfig) -> None:
    """Raise ValueError naming the culprit when a path of `config` cannot work."""
    check_source(config.source.path, config.source.storage_options)
    if not is_remote(config.sink.path):
        check_local_sink(config.sink.path.removeprefix("file://"))
    for key, path in (
        ("model.checkpoint", config.model.checkpoint),
        ("model.semantic_encoder", config.model.semantic_encoder),
    ):
        if path and not is_url(path) and not Path(path).is_file():
            raise ValueError(f"{key}={path} is not a file; give the path of a checkpoint file")


def check_source(url: str, storage_options: dict) -> None:
    """The source (a folder, manifest file or tar, local or remote) must exist."""
    fs, root = url_to_fs(url, storage_options)
    if not fs.exists(root):
        raise ValueError(
            f"source.path={url} does not exist; give a folder, manifest or s3:// prefix of audio"
        )


def check_local_sink(path: str) -> None:
    """The sink must be a folder, or creatable as one, and writable."""
    target = Path(path).absolute()
    if target.exists() and not target.is_dir():
        raise ValueError(f"sink.path={path} is a file; give a folder for the dataset")
    existing = target
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"sink.path={path} cannot be created: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"sink.path={path} is not writable ({existing} is read-only or not ours); choose another sink.path"
        )
