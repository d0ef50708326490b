"""Cuts at pauses: how often `pause_bounds` and equal cuts (`segment_bounds`) fall in a pause.

    python bench/pause_cuts.py [--minutes 60] [--max-seconds 10 20 30] [--min-seconds 2]
                               [--noise-dbfs -50] [--seed 0]

Speaks 20 sentences of 3 to 16 words with espeak-ng at 16 kHz, trims their leading and
trailing silence, and joins them in random order (seeded) into --minutes of long-form speech,
with a pause of 0.15 to 1.0 s (uniform) after each one: the only pauses there are, at known
positions. The recording is made twice: with digital silence in the pauses, and with white
noise at --noise-dbfs (RMS) over all of it, speech and pauses. For each recording and each
--max-seconds it prints, for the equal cuts and for the pause cuts: the fraction of cuts inside
a pause (the cut sample within it, no slack), the fraction inside a pause of 0.2 s or more, and
the mean segment length; then the time `pause_bounds` takes per hour of audio (int16 input,
best of 3; float32 input in the last column).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from losatok_input.testing import long_form_speech, spoken_sentences  # noqa: E402
from pipelines.segment import pause_bounds, segment_bounds  # noqa: E402

RATE = 16_000
SENTENCES = [
    "Good morning",
    "The river runs past the old mill",
    "Seven small boats sail into the harbour before the storm",
    "She reads the letter twice",
    "Nobody knew where the key was hidden until the spring cleaning began",
    "A cold wind blows across the northern hills",
    "The baker opens his shop at dawn and closes it long after the evening bells",
    "Bright lamps hang over the empty street",
    "We counted every star above the field",
    "Please hand me the blue cup",
    "The train to the coast leaves from the second platform at a quarter past nine",
    "Music drifted from an open window",
    "Children ran laughing through the wet grass",
    "The committee will publish its findings next week",
    "Thank you very much",
    "He painted the fence green and then changed his mind and painted it white again",
    "Old maps hide many small errors",
    "The soup needs a little more salt",
    "Our neighbours keep bees in the garden behind the house",
    "Turn left at the church and follow the road down to the lake",
]


def add_noise(pcm: np.ndarray, dbfs: float, seed: int) -> np.ndarray:
    """`pcm` (S,) plus white noise of RMS `dbfs`, a million samples at a time."""
    rng, out, block = np.random.default_rng(seed), np.empty_like(pcm), 1 << 20
    for a in range(0, len(pcm), block):
        noise = rng.standard_normal(min(block, len(pcm) - a)) * 32768 * 10 ** (dbfs / 20)
        out[a : a + block] = np.clip(pcm[a : a + block] + noise, -32768, 32767)
    return out


def in_pause(cuts: np.ndarray, starts: np.ndarray, ends: np.ndarray, shortest: float) -> float:
    """The fraction of `cuts` (C,) inside a pause of at least `shortest` seconds."""
    if len(cuts) == 0:
        return float("nan")
    keep = ends - starts >= shortest * RATE
    starts, ends = starts[keep], ends[keep]
    index = np.searchsorted(starts, cuts, side="right") - 1  # the last pause starting at or before
    inside = (index >= 0) & (cuts <= ends[np.maximum(index, 0)])
    return float(inside.mean())


def best_of(repeats: int, call) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=60.0, help="length of the long-form speech")
    p.add_argument("--max-seconds", type=float, nargs="+", default=[10.0, 20.0, 30.0])
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--noise-dbfs", type=float, default=-50.0, help="RMS of the noisy recording's noise")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="losatok-pause-cuts-") as scratch:
        spoken = spoken_sentences(scratch, SENTENCES, RATE)
    clean, starts, ends = long_form_speech(spoken, args.minutes * 60, args.seed, (0.15, 1.0), RATE)
    hours = len(clean) / RATE / 3600
    print(
        f"{len(clean) / RATE / 60:.1f} min of espeak-ng speech: {len(starts)} sentences, each followed by a "
        f"pause of 0.15-1.0 s ({100 * (ends - starts).sum() / len(clean):.0f} % of the time in pauses, "
        f"{100 * np.mean(ends - starts >= 0.2 * RATE):.0f} % of pauses >= 0.2 s); min_seconds={args.min_seconds}"
    )
    print(
        "| audio | max s | cuts (equal / pause) | equal: in pause | equal: in pause >= 0.2 s "
        "| pause: in pause | pause: in pause >= 0.2 s | mean segment s (equal / pause) "
        "| pause_bounds ms per hour, int16 / float32 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    recordings = [("digital silence", clean), (f"noise {args.noise_dbfs:g} dBFS", None)]
    for name, pcm in recordings:
        pcm = add_noise(clean, args.noise_dbfs, args.seed + 1) if pcm is None else pcm
        as_float = pcm.astype(np.float32) / 32768
        for max_seconds in args.max_seconds:
            equal = segment_bounds(len(pcm), RATE, max_seconds)
            bounds = pause_bounds(pcm, RATE, max_seconds, args.min_seconds)
            seconds_int = best_of(3, lambda: pause_bounds(pcm, RATE, max_seconds, args.min_seconds))  # noqa: B023
            seconds_float = best_of(3, lambda: pause_bounds(as_float, RATE, max_seconds, args.min_seconds))  # noqa: B023
            equal_cuts = np.array([a for a, _ in equal[1:]])
            pause_cuts = np.array([a for a, _ in bounds[1:]])
            print(
                f"| {name} | {max_seconds:g} | {len(equal_cuts)} / {len(pause_cuts)} "
                f"| {in_pause(equal_cuts, starts, ends, 0):.2f} | {in_pause(equal_cuts, starts, ends, 0.2):.2f} "
                f"| {in_pause(pause_cuts, starts, ends, 0):.2f} | {in_pause(pause_cuts, starts, ends, 0.2):.2f} "
                f"| {len(pcm) / RATE / len(equal):.1f} / {len(pcm) / RATE / len(bounds):.1f} "
                f"| {1000 * seconds_int / hours:.0f} / {1000 * seconds_float / hours:.0f} |"
            )


if __name__ == "__main__":
    main()
