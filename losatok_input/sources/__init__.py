"""Sources: listing a corpus into input items with deterministic keys, whatever its form.

One module a kind (`SourceConfig.kind`): `directory` (a folder or prefix of audio files),
`manifest` (ours, and NeMo's), `lhotse` (cut manifests), `hf_parquet` (Hugging Face audio
datasets in parquet), `wds` (WebDataset audio shards). Each turns a `SourceConfig` into
`InputItem`s in an order that is the same on every run; `iter_inputs` picks the kind.
Adding a source: a module here with `iter_<kind>(config) -> Iterator[InputItem]`, a branch in
`iter_inputs`, and a config file under `pipelines/conf/source/`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from losatok_input.config import SourceConfig
from losatok_input.items import InputItem, input_key
from losatok_input.rule import AUDIO_EXTENSIONS, SkippedFiles
from losatok_input.sources.directory import iter_directory, list_directory
from losatok_input.sources.wds import list_tar_shards
from losatok_storage.paths import is_remote, local_path

__all__ = [
    "EmptySourceError",
    "InputItem",
    "SourceConfig",
    "input_key",
    "iter_directory",
    "iter_inputs",
    "list_directory",
    "list_inputs",
    "list_tar_shards",
    "nothing_found",
    "source_label",
]


class EmptySourceError(ValueError):
    """A source that holds no input: the message says where the listing looked and for what."""


def source_label(config: SourceConfig) -> str:
    """The source as the dataset records it: an absolute local path, or the URL; no trailing '/'.

    Two spellings of one folder (`corpus`, `./corpus/`) are one source, so what left it is
    reported as missing rather than the whole folder read as a new source.
    """
    path = config.path
    if is_remote(path):
        return path.rstrip("/")
    return os.path.abspath(local_path(path)).rstrip("/") or "/"


def list_inputs(config: SourceConfig, skipped: SkippedFiles | None = None) -> list[InputItem]:
    """Input items of a source, in a deterministic order; keys are unique (checked). Holds the
    whole list: for tests and small sources; runs stream `iter_inputs` into the plan."""
    skipped = skipped if skipped is not None else SkippedFiles()
    items = list(iter_inputs(config, skipped))
    if not items:
        raise EmptySourceError(nothing_found(config, skipped))
    seen: dict[str, str] = {}
    for item in items:
        if item.key in seen:
            raise ValueError(f"inputs {seen[item.key]} and {item.location} share the key {item.key}")
        seen[item.key] = item.location
    return items


def nothing_found(config: SourceConfig, skipped: SkippedFiles) -> str:
    """One line: where the listing looked, for what, and what it left out."""
    if config.kind == "wds":
        return f"no audio source: no WebDataset shards (*.tar) under {config.path}"
    if config.kind != "dir":  # a manifest of any flavour: it names its inputs
        return f"no audio source: the {config.kind} source {config.path} lists no inputs"
    wanted = [e.lower().lstrip(".") for e in config.extensions or AUDIO_EXTENSIONS]
    if tuple(wanted) == AUDIO_EXTENSIONS:  # the commonest first, not the whole list
        shown = f"{len(wanted)} FFmpeg audio extensions: wav, flac, mp3, ogg, opus, m4a, ..."
    else:
        shown = f"extensions {', '.join(wanted)}"
    probed = ", and other files that FFmpeg opens as audio" if config.probe else ""
    return (
        f"no audio source: found no audio file under {config.path} (looked for {shown}{probed}); "
        f"{skipped.describe()}"
    )


def iter_inputs(config: SourceConfig, skipped: SkippedFiles | None = None) -> Iterator[InputItem]:
    """Input items of a source, streamed in a deterministic order (the plan checks key uniqueness).

    Files a "dir" listing leaves out are counted in `skipped`.
    """
    if config.kind == "dir":
        return iter_directory(config, skipped)
    if config.kind in ("manifest", "nemo"):
        from losatok_input.sources.manifest import iter_manifest_items

        return iter_manifest_items(config)
    if config.kind == "hf_parquet":
        from losatok_input.sources.hf_parquet import iter_row_groups

        return iter_row_groups(config)
    if config.kind == "lhotse":
        from losatok_input.sources.lhotse import iter_cuts

        return iter_cuts(config)
    if config.kind == "wds":
        return iter(list_tar_shards(config))
    raise ValueError(
        f"unknown source kind {config.kind!r}; expected 'dir', 'manifest', 'nemo', 'lhotse', 'wds' or 'hf_parquet'"
    )
