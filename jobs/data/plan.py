"""An epoch's plan: which rows each loader stream visits, in which batches, and what is done.

No Python object per sample anywhere: rows, lengths and batches are numpy arrays, and a rank
holds only its own streams' arrays (three int32 per sample), built from the index fragments
of the shards it reads.

- **Units.** The epoch's work is a list of units, one per (dataset, shard, copy): a dataset of
  weight 2 gives each shard twice, of weight 0.5 half of its shards (a window that rotates with
  the epoch). The list depends on (datasets, weights, seed, epoch) only.
- **Progress.** What an epoch has consumed is a set of done units plus, for the few units a
  stream stopped inside, a bitmap of their settled rows (consumed, or left out by a filter).
  It is independent of how many ranks or loader workers consumed it.
- **Segments.** An epoch runs as one segment, or more when a run resumes under another layout:
  the units not done are shuffled by (seed, epoch, segment), split into pieces when there are
  fewer than streams, and dealt to the least loaded stream by remaining seconds, so the split
  changes every epoch and stays balanced within one shard. A stream of rank r, worker w is
  stream `r * workers + w`.
- **Batches.** Each stream buckets its rows by length within a shuffle buffer under the frame
  budget (`bucket`); ranks agree on one batch count per segment (`equalise`) by splitting their
  biggest batches, with empty (padding) batches only when a rank has fewer samples than batches.
"""

from __future__ import annotations

import bisect
import heapq
import random
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Units:
    """The epoch's units, one per (dataset, shard, copy), as parallel arrays; unit id = index."""

    dataset: np.ndarray  # int32
    shard: np.ndarray  # int64 shard number
    copy: np.ndarray  # int32: 0, or more for a weight above 1
    samples: np.ndarray  # int64 rows of the shard's index fragment
    seconds: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.shard)


@dataclass(frozen=True)
class Catalog:
    """One dataset's shards at the epoch's start: numbers, samples and seconds (from summaries)."""

    shards: np.ndarray  # int64
    samples: np.ndarray  # int64
    seconds: np.ndarray  # float64


def epoch_units(catalogs: Sequence[Catalog], weights: Sequence[float], seed: int, epoch: int) -> Units:
    """Units of `epoch`: floor(weight) copies of every shard, and a rotating window of
    round(frac(weight) x shards) more. Deterministic from (catalogs, weights, seed, epoch)."""
    parts: list[tuple[int, np.ndarray, int]] = []  # (dataset, indices into its catalog, copy)
    for d, (catalog, weight) in enumerate(zip(catalogs, weights, strict=True)):
        n = len(catalog.shards)
        whole, fraction = int(weight), weight - int(weight)
        parts += [(d, np.arange(n), c) for c in range(whole)]
        extra = round(fraction * n)
        if extra and n:
            order = np.random.default_rng([seed, 7919, d]).permutation(n)  # fixed across epochs
            start = (epoch * extra) % n
            parts.append((d, np.sort(order[(start + np.arange(extra)) % n]), whole))
    parts.append((0, np.zeros(0, np.int64), 0))  # so an empty epoch concatenates too

    def column(values: Any, dtype: Any) -> np.ndarray:
        return np.concatenate([np.asarray(values(d, i, c), dtype) for d, i, c in parts])

    return Units(
        dataset=column(lambda d, i, c: np.full(len(i), d), np.int32),
        shard=column(lambda d, i, c: catalogs[d].shards[i] if len(i) else [], np.int64),
        copy=column(lambda d, i, c: np.full(len(i), c), np.int32),
        samples=column(lambda d, i, c: catalogs[d].samples[i] if len(i) else [], np.int64),
        seconds=column(lambda d, i, c: catalogs[d].seconds[i] if len(i) else [], np.float64),
    )


@dataclass
class Progress:
    """What an epoch has consumed: units done, and settled rows of the units stopped inside."""

    done: set[int] = field(default_factory=set)
    partial: dict[int, np.ndarray] = field(default_factory=dict)  # unit -> bool (rows,) settled

    def remaining_fraction(self, unit: int, rows: int) -> float:
        if unit in self.done:
            return 0.0
        settled = self.partial.get(unit)
        return 1.0 if settled is None or rows == 0 else 1.0 - float(settled.mean())

    def merged(self, reports: Iterable[Report], units: Units) -> Progress:
        """This progress plus what streams report; a unit whose rows are all settled is done."""
        done, partial = set(self.done), {u: rows.copy() for u, rows in self.partial.items()}
        for report in reports:
            done |= set(report.done)
            for unit, rows in report.partial.items():
                partial[unit] = partial[unit] | rows if unit in partial else rows.copy()
        for unit in [u for u, rows in partial.items() if u in done or rows.all()]:
            done.add(unit)
            del partial[unit]
        return Progress(done, partial)

    def to_state(self) -> dict:
        return {
            "done": torch.tensor(sorted(self.done), dtype=torch.int64),
            "partial": {int(u): _pack(rows) for u, rows in sorted(self.partial.items())},
        }

    @classmethod
    def from_state(cls, state: dict, units: Units) -> Progress:
        done = set(state["done"].tolist())
        partial = {int(u): _unpack(b, int(units.samples[int(u)])) for u, b in state["partial"].items()}
        return cls(done, partial)


@dataclass
class Report:
    """One stream's consumption beyond the segment's base: whole units done, and bitmaps."""

    done: list[int] = field(default_factory=list)
    partial: dict[int, np.ndarray] = field(default_factory=dict)

    def to_state(self) -> dict:
        return {"done": list(self.done), "partial": {int(u): _pack(r) for u, r in self.partial.items()}}

    @classmethod
    def from_state(cls, state: dict, units: Units) -> Report:
        partial = {int(u): _unpack(b, int(units.samples[int(u)])) for u, b in state["partial"].items()}
        return cls(list(state["done"]), partial)


def _pack(rows: np.ndarray) -> torch.Tensor:
    """A bool row mask as packed bits (a tensor: checkpoints load with weights_only=True)."""
    return torch.from_numpy(np.packbits(rows))


def _unpack(bits: torch.Tensor, count: int) -> np.ndarray:
    return np.unpackbits(bits.numpy(), count=count).astype(bool)


@dataclass(frozen=True)
class Piece:
    """Rows [start, stop) of a unit's shard."""

    unit: int
    start: int
    stop: int


def deal(
    units: Units, progress: Progress, streams: int, seed: int, epoch: int, segment: int
) -> list[list[Piece]]:
    """The units not done, shuffled by (seed, epoch, segment), dealt to `streams` streams: each to
    the one with the fewest remaining seconds so far (ties: the lowest). With fewer units than
    streams each unit is cut into row ranges first, so no stream idles while another reads."""
    remaining = [u for u in range(len(units)) if u not in progress.done and units.samples[u] > 0]
    order = np.random.default_rng([seed, epoch, segment, 104729]).permutation(len(remaining))
    pieces: list[tuple[Piece, float]] = []
    cuts = -(-streams // len(remaining)) if 0 < len(remaining) < streams else 1
    for index in order:
        unit = remaining[index]
        rows = int(units.samples[unit])
        seconds = float(units.seconds[unit]) * progress.remaining_fraction(unit, rows)
        bounds = [round(j * rows / cuts) for j in range(cuts + 1)]
        pieces += [(Piece(unit, a, b), seconds * (b - a) / rows) for a, b in zip(bounds, bounds[1:]) if b > a]
    out: list[list[Piece]] = [[] for _ in range(streams)]
    heap = [(0.0, s) for s in range(streams)]
    for piece, seconds in pieces:
        load, stream = heapq.heappop(heap)
        out[stream].append(piece)
        heapq.heappush(heap, (load + seconds, stream))
    return out


@dataclass
class StreamPlan:
    """One stream's rows in read order and its batches.

    Positions 0..n-1 run through the pieces in order, rows ascending within each (tar order):
    `piece_of[p]`, `row[p]`. Batch i holds positions `members[offsets[i]:offsets[i+1]]`; an
    empty batch is padding (the rank had fewer samples than the segment's batch count).
    """

    pieces: list[Piece]
    piece_of: np.ndarray  # int32, per position
    row: np.ndarray  # int32, per position: row in the unit's index fragment
    members: np.ndarray  # int32 positions, batch after batch
    offsets: np.ndarray  # int64, batches + 1

    @property
    def batches(self) -> int:
        return len(self.offsets) - 1

    def batch(self, index: int) -> np.ndarray:
        return self.members[self.offsets[index] : self.offsets[index + 1]]

    def needed_from(self, taken: int) -> np.ndarray:
        """bool per position: still to be yielded once `taken` batches are out."""
        needed = np.zeros(len(self.row), bool)
        needed[self.members[self.offsets[taken] :]] = True
        return needed

    def report(self, taken: int, units: Units, base: Progress) -> Report:
        """What this stream consumed in its first `taken` batches, as units done and bitmaps."""
        consumed = np.zeros(len(self.row), bool)
        consumed[self.members[: self.offsets[taken]]] = True
        out = Report()
        starts = np.searchsorted(self.piece_of, np.arange(len(self.pieces) + 1))
        for j, piece in enumerate(self.pieces):
            a, b = starts[j], starts[j + 1]
            if a < b and not consumed[a:b].any():
                continue  # nothing of this piece consumed yet
            rows = int(units.samples[piece.unit])
            settled = base.partial.get(piece.unit, np.zeros(rows, bool)).copy()
            settled[piece.start : piece.stop] = True  # filtered-out rows are settled
            settled[self.row[a:b][~consumed[a:b]]] = False  # kept rows still to come
            if settled.all():
                out.done.append(piece.unit)
            else:
                out.partial[piece.unit] = settled
        return out


def stream_rows(pieces: Sequence[Piece], kept: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(piece_of, row) over the kept rows of `pieces`; `kept[j]` is piece j's bool row mask over
    its whole unit (filters, the piece's range, and rows not yet settled in the base)."""
    piece_of, row = [], []
    for j, (piece, mask) in enumerate(zip(pieces, kept, strict=True)):
        rows = np.flatnonzero(mask[piece.start : piece.stop]).astype(np.int32) + piece.start
        piece_of.append(np.full(len(rows), j, np.int32))
        row.append(rows)
    if not piece_of:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    return np.concatenate(piece_of), np.concatenate(row)


def bucket(
    lengths: np.ndarray, rng: random.Random, shuffle_buffer: int, batch_frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """Batches over positions 0..n-1 read in order: (members, offsets) as in StreamPlan.

    A random sample of the buffer opens each batch; the buffer's samples closest to it in length
    fill it while B x T_max <= batch_frames (at least one item), so padding stays small and order
    random. The buffer is kept sorted by (length, position), so a batch costs O(buffer).
    """
    n = len(lengths)
    values = array("q", np.asarray(lengths, np.int64).tobytes())  # 8 bytes a sample, not a Python int
    pool: list[tuple[int, int]] = []  # (length, position)
    members = array("i")
    offsets = array("q", [0])
    next_position = 0
    size = max(1, shuffle_buffer)
    while True:
        while len(pool) < size and next_position < n:
            bisect.insort(pool, (values[next_position], next_position))
            next_position += 1
        if not pool:
            return np.frombuffer(members, np.int32).copy(), np.frombuffer(offsets, np.int64).copy()
        first = rng.randrange(len(pool))
        target = longest = pool[first][0]
        low, high = first, first + 1  # pool[low:high] is the batch
        while True:
            left = target - pool[low - 1][0] if low > 0 else None
            right = pool[high][0] - target if high < len(pool) else None
            if left is None and right is None:
                break
            take_left = right is None or (left is not None and left <= right)
            length = max(longest, pool[low - 1][0] if take_left else pool[high][0])
            if length * (high - low + 1) > batch_frames:
                break
            low, high = (low - 1, high) if take_left else (low, high + 1)
            longest = length
        members.extend(p for _, p in pool[low:high])
        offsets.append(len(members))
        del pool[low:high]


def equalise(plans: Sequence[StreamPlan], count: int) -> None:
    """Split the streams' biggest batches into nearly equal parts until they hold `count` in all;
    past one sample per batch, append empty (padding) batches round robin. In place;
    deterministic: ties go to the earlier stream and batch."""
    pieces = {(s, i): 1 for s, plan in enumerate(plans) for i in range(plan.batches)}
    sizes = {(s, i): len(plan.batch(i)) for s, plan in enumerate(plans) for i in range(plan.batches)}
    heap = [(-size, s, i) for (s, i), size in sizes.items()]
    heapq.heapify(heap)
    missing = count - len(pieces)
    while missing > 0 and heap and -heap[0][0] > 1:
        _, s, i = heapq.heappop(heap)
        pieces[s, i] += 1
        missing -= 1
        heapq.heappush(heap, (-(-sizes[s, i] // pieces[s, i]), s, i))  # its largest part after the split
    for s, plan in enumerate(plans):
        offsets = [0]
        for i in range(plan.batches):
            a, size, parts = int(plan.offsets[i]), sizes[s, i], pieces[s, i]
            offsets += [a + round(j * size / parts) for j in range(1, parts + 1)]
        offsets += [offsets[-1]] * (max(0, missing) // len(plans) + (s < max(0, missing) % len(plans)))
        plan.offsets = np.asarray(offsets, np.int64)
