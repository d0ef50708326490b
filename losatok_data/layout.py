"""Where each part of a latent dataset lives under its root (a local folder or s3:// prefix).

```
<root>/
  card.json                     dataset card: version, tokenizer, fields, totals, stats
  latent/shard-000000.tar       field group "latent": <key>.latent.npy, .logvar.npy,
                                .semantic_low.npy, .json
  semantic/shard-000000.tar     field group "semantic": <key>.semantic.npy only; the same
                                keys in the same order as latent/shard-000000.tar
  index/shard-000000.parquet    index fragment: one row per sample of shard 000000, with a
                                checksum of every tar member
  stats/shard-000000.json       per-channel latent stats of shard 000000; the card's
                                `latent_stats` is their merge
  failures/<writer>.parquet     failure ledger fragments, one per writer (no contention)
  shards.parquet                one row per committed shard: samples, frames, seconds; derived
                                from the index when a run finalises, so a loader can split
                                shards across ranks without reading the whole index
```

Shard names are `shard-` plus six digits, so they sort in order and a million shards fit.
One tar per field group per shard, as lhotse's Shar does: a reader of latents never opens
the semantic tars, which may be dropped, regenerated or moved without touching the latents.

Commit protocol: a shard's tars and its stats fragment are written first (each appears
atomically, see `losatok_storage.filesystem`), then its index fragment. A shard exists for readers only once its index
fragment does, so the index folder is the list of committed shards; a tar without a
fragment is the trace of an interrupted write, which a rerun overwrites.

`shards.parquet` is optional and may lag the index (a run killed before finalising, a dataset
written before it existed): readers trust its rows for committed shards, summarise the
shards it lacks from their fragments, and ignore rows of shards that are not committed. It
lives beside `index/`, not in it, so that `index/*.parquet` stays one table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from losatok_storage.filesystem import TEMP_MARKER, RetryingFileSystem, url_to_fs
from losatok_storage.retry import RetryPolicy

CARD_NAME = "card.json"
SUMMARY_NAME = "shards.parquet"
INDEX_DIR = "index"
STATS_DIR = "stats"
FAILURES_DIR = "failures"
SHARD_DIGITS = 6
SHARD_NAME = re.compile(r"^shard-(\d{6})$")


def shard_name(number: int) -> str:
    """`7` -> `"shard-000007"`."""
    if not 0 <= number < 10**SHARD_DIGITS:
        raise ValueError(f"shard number {number} is outside 0..{10**SHARD_DIGITS - 1}")
    return f"shard-{number:0{SHARD_DIGITS}d}"


def shard_number(name: str) -> int:
    """`"shard-000007"` -> `7`; raises ValueError for another name."""
    match = SHARD_NAME.match(name)
    if not match:
        raise ValueError(f"{name!r} is not a shard name like 'shard-000000'")
    return int(match.group(1))


@dataclass(frozen=True)
class DatasetLayout:
    """Paths of a dataset's parts; `url` is a local path or URL, e.g. `s3://bucket/corpus-v1`."""

    url: str
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False)  # may hold credentials
    retry: RetryPolicy | None = field(default=None, repr=False, compare=False)  # None: the default

    def __post_init__(self) -> None:
        fs, root = url_to_fs(self.url, self.storage_options, self.retry)
        object.__setattr__(self, "fs", fs)
        object.__setattr__(self, "root", root.rstrip("/"))

    fs: RetryingFileSystem = field(init=False, repr=False, compare=False)  # every call retried
    root: str = field(init=False, repr=False, compare=False)  # path within fs, no protocol

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    @property
    def card_path(self) -> str:
        return self.path(CARD_NAME)

    @property
    def summary_path(self) -> str:
        """The per-shard summary (see the module docstring); optional."""
        return self.path(SUMMARY_NAME)

    def tar_path(self, group: str, number: int) -> str:
        return self.path(group, f"{shard_name(number)}.tar")

    def index_path(self, number: int) -> str:
        return self.path(INDEX_DIR, f"{shard_name(number)}.parquet")

    def stats_path(self, number: int) -> str:
        return self.path(STATS_DIR, f"{shard_name(number)}.json")

    def stats_fragments(self) -> dict[int, str]:
        """Shard number -> stats fragment path, committed shard or not."""
        return self._numbered(STATS_DIR, ".json")

    def failures_path(self, writer: str) -> str:
        if not re.match(r"^[A-Za-z0-9_.-]+$", writer) or writer.startswith("."):
            raise ValueError(f"writer name {writer!r} must be letters, digits, '.', '-' or '_'")
        return self.path(FAILURES_DIR, f"{writer}.parquet")

    def committed_shards(self) -> dict[int, str]:
        """Shard number -> index fragment path, for every committed shard, in order."""
        return self._numbered(INDEX_DIR, ".parquet")

    def tars(self, group: str) -> dict[int, str]:
        """Shard number -> tar path for every tar of a group, committed or not."""
        return self._numbered(group, ".tar")

    def failure_fragments(self) -> list[str]:
        return sorted(p for p in self._files(FAILURES_DIR) if p.endswith(".parquet") and not _hidden(p))

    def temporary_files(self) -> list[str]:
        """Leftovers of interrupted local writes (hidden names with a temp marker)."""
        found = []
        for folder in self.fs.ls(self.root, detail=False) if self.fs.exists(self.root) else []:
            candidates = self._files(folder.rsplit("/", 1)[-1]) if self.fs.isdir(folder) else [folder]
            found += [p for p in candidates if TEMP_MARKER in p.rsplit("/", 1)[-1]]
        return sorted(found)

    def _numbered(self, folder: str, suffix: str) -> dict[int, str]:
        out = {}
        for path in self._files(folder):
            name = path.rsplit("/", 1)[-1]
            if name.endswith(suffix) and SHARD_NAME.match(name[: -len(suffix)]):
                out[shard_number(name[: -len(suffix)])] = path
        return dict(sorted(out.items()))

    def _files(self, folder: str) -> list[str]:
        path = self.path(folder)
        try:
            return [p for p in self.fs.ls(path, detail=False) if p.rstrip("/") != path]
        except FileNotFoundError:
            return []

    def url_of(self, path: str) -> str:
        """A path within fs as a URL a person can paste (`s3://...` or a local path)."""
        protocol = self.fs.protocol[0] if isinstance(self.fs.protocol, (tuple, list)) else self.fs.protocol
        return path if protocol in ("file", "local") else f"{protocol}://{path}"


def _hidden(path: str) -> bool:
    return path.rsplit("/", 1)[-1].startswith(".")
