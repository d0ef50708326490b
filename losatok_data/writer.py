"""Writing shards: one tar per field group, then the index fragment that commits them.

`ShardWriter` writes one field group's tar of one shard and digests every member it writes.
`write_shard` is the commit protocol in one call: encode each sample once, write every
group's tar (each appears atomically) and the shard's stats fragment, then write the index
fragment, which holds the members' checksums; until that last write the shard does not
exist for readers, so a crash at any point leaves the dataset consistent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np

from losatok_data.checksums import DEFAULT_CHECKSUM, checksum
from losatok_data.errors import SchemaError
from losatok_data.fields import LATENT_GROUP, METADATA_MEMBER, FieldSet, FieldSpec, as_field_set
from losatok_data.index import IndexRow, ShardInfo, write_index_fragment
from losatok_data.layout import DatasetLayout, shard_name
from losatok_data.sample import LatentSample, encode_sample
from losatok_data.stats import ChannelStats, write_stats_fragment
from losatok_storage.filesystem import open_atomic
from losatok_storage.tario import TarSampleWriter


class ShardWriter:
    """Context manager writing the tar of one field group of one shard.

    ```
    with ShardWriter(layout, LATENT_GROUP, 0, fields) as w:
        w.write(encode_sample(sample, fields))
    ```
    `write` takes the members of an encoded sample and keeps this group's: the group's
    array fields (required ones must be there) plus `json` in the latent group. The tar
    appears at `layout.tar_path(group, number)` on a clean exit, and not at all otherwise.
    `checksums[key]` maps each member written (`"latent.npy"`, `"json"`) to its digest with
    `checksum` (None: no digests).
    """

    def __init__(
        self,
        layout: DatasetLayout,
        group: str,
        number: int,
        fields: FieldSet | Iterable[FieldSpec] | None = None,
        checksum: str | None = DEFAULT_CHECKSUM,
    ) -> None:
        self.fields = as_field_set(fields)
        if group not in self.fields.groups():
            raise SchemaError(
                f"no field of this dataset is in group {group!r}; groups: {self.fields.groups()}"
            )
        self.layout, self.group, self.number = layout, group, number
        self.path = layout.tar_path(group, number)
        self.keys: list[str] = []
        self.bytes_written = 0  # payload bytes (member data, no tar headers)
        self.checksum = checksum
        self.checksums: dict[str, dict[str, str]] = {}
        self._specs = self.fields.in_group(group)
        self._context: Any = None
        self._tar: TarSampleWriter | None = None

    def __enter__(self) -> ShardWriter:
        self._context = open_atomic(self.layout.fs, self.path)
        self._tar = TarSampleWriter(self._context.__enter__())
        return self

    def write(self, members: Mapping[str, Any]) -> None:
        """Write this group's members of one encoded sample (see encode_sample)."""
        if self._tar is None:
            raise RuntimeError("ShardWriter.write outside its `with` block")
        key = members["__key__"]
        chosen = {}
        for spec in self._specs:
            if spec.member in members:
                chosen[spec.member] = members[spec.member]
            elif spec.required:
                raise SchemaError(
                    f"{shard_name(self.number)}/{self.group}: sample {key!r} lacks {spec.name!r}"
                )
        if self.group == LATENT_GROUP:
            if METADATA_MEMBER not in members:
                raise SchemaError(f"{shard_name(self.number)}: sample {key!r} lacks its json metadata")
            chosen[METADATA_MEMBER] = members[METADATA_MEMBER]
        self._tar.write(key, chosen)
        if self.checksum is not None:
            self.checksums[key] = {member: checksum(data, self.checksum) for member, data in chosen.items()}
        self.keys.append(key)
        self.bytes_written += sum(len(v) for v in chosen.values())

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        tar, context = self._tar, self._context
        self._tar = self._context = None
        if kind is None:
            tar.close()  # end-of-archive marker, before the file is committed
        else:
            tar.abandon()
        context.__exit__(kind, error, tb)


@dataclass(frozen=True)
class WrittenShard:
    """What write_shard committed: the shard's totals, index rows and latent stats."""

    info: ShardInfo
    rows: tuple[IndexRow, ...]
    bytes_by_group: Mapping[str, int] = field(default_factory=dict)  # tar file sizes
    latent_stats: ChannelStats | None = None  # over the stored (cast) latent frames


def write_shard(
    layout: DatasetLayout,
    number: int,
    samples: Iterable[LatentSample],
    fields: FieldSet | Iterable[FieldSpec] | None = None,
    frame_rate: float | None = None,
    checksum: str | None = DEFAULT_CHECKSUM,
) -> WrittenShard:
    """Write and commit shard `number`: every group's tar and its stats, then its index fragment.

    Samples are validated (and cast to storage dtypes) by encode_sample; keys must be unique
    within the shard. Rewriting a shard number replaces it. `frame_rate` (Hz), when given,
    checks durations against frame counts. `checksum` names the digest of every tar member
    kept in the index (None writes none, as data of schema 1.0 has none).
    """
    specs = as_field_set(fields)
    name = shard_name(number)
    writers = [ShardWriter(layout, group, number, specs, checksum) for group in specs.groups()]
    samples_written: list[LatentSample] = []
    stats: ChannelStats | None = None
    seen: set[str] = set()
    # The stack commits every tar on a clean exit and abandons all of them on an error.
    with contextlib.ExitStack() as stack:
        for w in writers:
            stack.enter_context(w)
        for sample in samples:
            if sample.key in seen:
                raise SchemaError(f"{name}: key {sample.key!r} written twice")
            seen.add(sample.key)
            members = encode_sample(sample, specs, frame_rate=frame_rate)
            for w in writers:
                w.write(members)
            stored = np.asarray(sample.latent).astype(specs["latent"].dtype)
            stats = ChannelStats.of(stored) if stats is None else stats.update(stored)
            samples_written.append(sample)
    rows = [
        IndexRow.of(
            sample,
            name,
            None if checksum is None else {m: d for w in writers for m, d in w.checksums[sample.key].items()},
        )
        for sample in samples_written
    ]
    # Stats before the index fragment: a committed shard always has them, so a missing one is
    # damage, not the trace of a crash (an empty shard gets count-0 stats).
    write_stats_fragment(layout, number, stats or ChannelStats.empty(specs["latent"].frame_shape[0]))
    write_index_fragment(layout, number, rows, checksum or DEFAULT_CHECKSUM)
    info = ShardInfo(
        number=number,
        name=name,
        samples=len(rows),
        frames=sum(r.frame_count for r in rows),
        seconds=sum(r.duration for r in rows),
    )
    sizes = {w.group: layout.fs.size(w.path) for w in writers}
    return WrittenShard(info, tuple(rows), sizes, stats)
