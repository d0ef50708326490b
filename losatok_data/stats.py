"""Per-channel mean and standard deviation of latents, mergeable across workers.

Each encode actor accumulates the frames it writes; the pipeline merges the actors' stats
into the dataset card, where a DiT reads them to normalise latents to zero mean and unit
variance per channel. Merging uses Chan et al.'s parallel update in float64, so merged stats
equal stats over the concatenated frames (no catastrophic cancellation of sum-of-squares).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from losatok_storage.filesystem import open_atomic

if TYPE_CHECKING:
    from losatok_data.layout import DatasetLayout


@dataclass(frozen=True, eq=False)
class ChannelStats:
    """Count of frames, and per-channel mean and sum of squared deviations (M2), each (D,)."""

    count: int
    mean: np.ndarray  # (D,) float64
    m2: np.ndarray  # (D,) float64, sum over frames of (x - mean)^2

    @classmethod
    def empty(cls, dim: int) -> ChannelStats:
        return cls(0, np.zeros(dim), np.zeros(dim))

    @classmethod
    def of(cls, frames: np.ndarray) -> ChannelStats:
        """Stats of frames (T, D) (any float dtype; computed in float64)."""
        x = np.asarray(frames, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"expected frames of shape (T, D), got {x.shape}")
        if x.shape[0] == 0:
            return cls.empty(x.shape[1])
        mean = x.mean(axis=0)
        return cls(int(x.shape[0]), mean, ((x - mean) ** 2).sum(axis=0))

    def __eq__(self, other: object) -> bool:
        # Arrays compare elementwise; two stats are equal when every number is.
        if not isinstance(other, ChannelStats):
            return NotImplemented
        return (
            self.count == other.count
            and np.array_equal(self.mean, other.mean)
            and np.array_equal(self.m2, other.m2)
        )

    __hash__ = None  # mutable arrays inside: not hashable

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def update(self, frames: np.ndarray) -> ChannelStats:
        """Stats with frames (T, D) added."""
        return self.merge(ChannelStats.of(frames))

    def merge(self, other: ChannelStats) -> ChannelStats:
        """Stats of the union of both sets of frames (Chan et al., 1979)."""
        if self.dim != other.dim:
            raise ValueError(f"cannot merge stats of {self.dim} and {other.dim} channels")
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / n)
        return ChannelStats(n, mean, m2)

    @classmethod
    def merge_all(cls, stats: Iterable[ChannelStats]) -> ChannelStats:
        """Merge many (e.g. one per actor); at least one is needed for the dimension."""
        items = list(stats)
        if not items:
            raise ValueError("no stats to merge")
        out = items[0]
        for item in items[1:]:
            out = out.merge(item)
        return out

    @property
    def var(self) -> np.ndarray:
        """(D,) population variance (M2 / count); zeros when empty."""
        return self.m2 / self.count if self.count else np.zeros_like(self.m2)

    @property
    def std(self) -> np.ndarray:
        """(D,) population standard deviation."""
        return np.sqrt(self.var)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: frame count, and mean and std as lists of floats (for the card)."""
        return {"count": self.count, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChannelStats:
        count = int(data["count"])
        mean = np.asarray(data["mean"], dtype=np.float64)
        std = np.asarray(data["std"], dtype=np.float64)
        if mean.shape != std.shape or mean.ndim != 1:
            raise ValueError(f"stats mean {mean.shape} and std {std.shape} must be equal-length lists")
        return cls(count, mean, std**2 * count)


def write_stats_fragment(layout: DatasetLayout, number: int, stats: ChannelStats) -> str:
    """Write (atomically) `stats/shard-*.json` of shard `number`; returns its path."""
    path = layout.stats_path(number)
    with open_atomic(layout.fs, path) as f:
        f.write(json.dumps(stats.to_dict()).encode())
    return path


def read_stats_fragment(layout: DatasetLayout, number: int) -> ChannelStats:
    """The stats fragment of shard `number`.

    Raises FileNotFoundError when it is missing and ValueError when it does not parse.
    """
    data = layout.fs.cat_file(layout.stats_path(number))
    try:
        return ChannelStats.from_dict(json.loads(data))
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"malformed stats fragment ({type(error).__name__}: {error})") from None


def stats_close(a: ChannelStats, b: ChannelStats, rtol: float = 1e-9) -> bool:
    """Whether two stats agree up to the rounding of a JSON round trip and merge order.

    Means and stds are compared with `rtol` and an absolute floor of `rtol` times the
    largest std, so near-zero means do not demand an exact match.
    """
    if a.count != b.count or a.dim != b.dim:
        return False
    scale = max(float(np.max(a.std, initial=0.0)), float(np.max(b.std, initial=0.0)), 1e-30)
    return bool(
        np.allclose(a.mean, b.mean, rtol=rtol, atol=rtol * scale)
        and np.allclose(a.std, b.std, rtol=rtol, atol=rtol * scale)
    )
