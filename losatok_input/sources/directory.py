"""The `dir` source: every audio file under a folder or prefix, one input each."""

from __future__ import annotations

from collections.abc import Iterator

from losatok_input.config import SourceConfig
from losatok_input.items import InputItem, input_key
from losatok_input.listing import iter_audio_files
from losatok_input.rule import SkippedFiles


def list_directory(config: SourceConfig, skipped: SkippedFiles | None = None) -> list[InputItem]:
    """Every audio file under `config.path` (see iter_directory)."""
    return list(iter_directory(config, skipped))


def iter_directory(config: SourceConfig, skipped: SkippedFiles | None = None) -> Iterator[InputItem]:
    """Audio files under `config.path`, streamed in a fixed order (`losatok_input.listing`):
    the driver never holds the whole listing. Each file left out is counted in `skipped`."""
    for listed in iter_audio_files(
        config.path, config.storage_options, extensions=config.extensions, probe=config.probe, skipped=skipped
    ):
        yield InputItem(input_key(listed.location), listed.location, size_bytes=listed.size)
