"""Where a corpus is and how to read it: the one config every source takes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from losatok_input.rule import AUDIO_EXTENSIONS


@dataclass(frozen=True)
class SourceConfig:
    kind: str = "dir"  # "dir", "manifest" (parquet/jsonl/csv), "nemo", "lhotse", "wds" or "hf_parquet"
    path: str = ""  # local path or s3:// URI
    # "dir": audio without opening the file; None or empty: FFmpeg's audio extensions
    extensions: tuple[str, ...] | None = AUDIO_EXTENSIONS
    probe: bool = True  # "dir": a file of another, unknown extension is audio if FFmpeg opens it
    storage_options: dict[str, Any] = field(default_factory=dict)  # fsspec options (e.g. endpoint_url)
    # manifests, nemo, hf_parquet: {their column: ours}, e.g. {"wav": "location", "sentence": "text"}
    columns: dict[str, str] = field(default_factory=dict)
    audio_root: str | None = (
        None  # hf_parquet: where a row's audio `path` resolves (default: the file's folder)
    )
