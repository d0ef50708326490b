"""Cutting long inputs into segments on the token grid."""

from __future__ import annotations

import math


def segment_bounds(
    n_samples: int, sample_rate: int, max_seconds: float, samples_per_token: int = 640
) -> list[tuple[int, int]]:
    """Split `n_samples` into near-equal segments no longer than `max_seconds`.

    Every boundary falls on a multiple of `samples_per_token`, so a segment's latents line up
    with the latents of the whole file; the last segment also takes the sub-token tail.
    Equal lengths (rather than max-length segments plus a remainder) never leave a tiny
    last piece. Returns [(start, end)] in samples; a short input is one whole-file segment.
    """
    max_tokens = max(1, int(max_seconds * sample_rate) // samples_per_token)
    tokens = n_samples // samples_per_token
    pieces = max(1, math.ceil(tokens / max_tokens))
    base, extra = divmod(tokens, pieces)  # the first `extra` pieces take one token more
    bounds, start = [], 0
    for index in range(pieces):
        end = n_samples if index == pieces - 1 else start + (base + (index < extra)) * samples_per_token
        bounds.append((start, end))
        start = end
    return bounds
