"""Cutting long inputs into segments on the token grid."""

from __future__ import annotations

import math

import numpy as np

# pause_bounds looks for each cut in the last third of a max-length segment: late enough that
# segments stay long (two thirds of max_seconds or more, where the input allows), wide enough
# (3.3 s at max_seconds=10) that speech nearly always pauses somewhere inside it.
PAUSE_WINDOW = 1 / 3
# Quietness at a token boundary is the mean square of the 6 tokens around it, 3 on each side
# (240 ms at 16 kHz): longer than the silent closure of a stop consonant (up to ~110 ms in
# espeak-ng speech), which must not pass for a pause, and no longer than a short pause between
# phrases. Even, so the stretch is centred on the boundary. On bench/pause_cuts.py 6 beat 2 and
# 4 (which cut inside words more often, or in shorter pauses) and matched 8.
SMOOTH_TOKENS = 6
# Boundaries within this factor of the least energy (3 dB) count as equally quiet, and the latest
# stretch of them wins: in steady background noise every pause measures the same to within its
# random fluctuation (2 % over 240 ms of white noise), so the argmin alone would pick one at
# random, and segments came out 10-15 % shorter than in digital silence on bench/pause_cuts.py;
# speech that is heard over noise is usually 10 dB or more above it.
QUIET_TOLERANCE = 2.0
# Energies are computed this many samples at a time (8 MiB as float64), so memory stays small
# whatever max_seconds is.
ENERGY_BLOCK_SAMPLES = 1 << 20


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


def pause_bounds(
    wav: np.ndarray, sample_rate: int, max_seconds: float, min_seconds: float, samples_per_token: int = 640
) -> list[tuple[int, int]]:
    """Split `wav` (S,) into segments of `min_seconds` to `max_seconds`, cutting in pauses.

    `wav` is float audio in [-1, 1] or int16 PCM (read as x / 32768); both give the same bounds
    for the same audio. The contract is segment_bounds's: [(start, end)] in samples covering
    [0, S) contiguously, every boundary but the final end on a multiple of `samples_per_token`,
    the last segment taking the sub-token tail. A segment holds at most
    max(1, int(max_seconds * sample_rate) // samples_per_token) tokens (the last one plus the
    tail), so an input of at most that many tokens is one segment. No segment is shorter than
    `min_seconds` unless no split can avoid it (min_seconds is then lowered just enough for the
    whole input; an input shorter than min_seconds is one segment).

    Cuts are placed greedily from the start. Where the rest does not fit in one segment, the
    cut goes in a window of PAUSE_WINDOW * max tokens that ends at the latest allowed cut:
    start + max tokens, or earlier where the rest would otherwise be shorter than min_seconds or
    could not be split into valid segments (the window then slides earlier, keeping its width).
    The cut is the boundary where the mean square over the SMOOTH_TOKENS tokens centred on it
    is least; boundaries within QUIET_TOLERANCE of that least value count as equally quiet, and
    the cut is the centre of the latest run of them (the middle of the pause; the latest pause,
    so segments stay long), or the latest boundary when every one is as quiet (no pause to find:
    a steady tone or dense music is cut at max_seconds, as equal cuts would). Reads only the
    windows' samples, in float64 blocks of ENERGY_BLOCK_SAMPLES: about 30 ms per hour of 16 kHz
    audio at max_seconds=10.
    """
    if wav.ndim != 1:
        raise ValueError(f"pause_bounds takes mono samples of shape (S,), got shape {wav.shape}")
    if wav.dtype == np.int16:
        scale = 2.0**-30  # (x / 32768) ** 2, exact: int16 and the same audio as float agree
    elif np.issubdtype(wav.dtype, np.floating):
        scale = 1.0
    else:
        raise TypeError(f"pause_bounds takes float or int16 samples, got {wav.dtype}")
    if not 0 <= min_seconds <= max_seconds:
        raise ValueError(f"need 0 <= min_seconds <= max_seconds, got {min_seconds} and {max_seconds}")
    n_samples, spt = len(wav), samples_per_token
    max_tokens = max(1, int(max_seconds * sample_rate) // spt)
    tokens, tail = divmod(n_samples, spt)
    if tokens <= max_tokens:
        return [(0, n_samples)]
    min_samples = math.ceil(min_seconds * sample_rate - 1e-6)  # 0.07 * 100 is 7.000000000000001
    min_tokens = min(max(1, -(-min_samples // spt)), max_tokens)  # a segment that is not last
    min_last = min(max(1, -(-(min_samples - tail) // spt)), min_tokens)  # the last has the tail
    while not _coverable(np.array([tokens]), max_tokens, min_tokens, min_last)[0]:
        min_tokens -= 1  # no split keeps min_seconds: the largest minimum one can (1 always can)
        min_last = min(min_last, min_tokens)
    window = max(1, round(max_tokens * PAUSE_WINDOW))
    cuts = [0]
    while tokens - cuts[-1] > max_tokens:
        start = cuts[-1]
        cand = np.arange(start + min_tokens, start + max_tokens + 1)  # (C,) cut positions, tokens
        # never empty: the rest is coverable (so far), so some first segment leaves a coverable rest
        cand = cand[_coverable(tokens - cand, max_tokens, min_tokens, min_last)]
        cand = cand[cand >= cand[-1] - window]
        quiet = _boundary_energy(wav, scale, spt, tokens, cand[0], cand[-1])[cand - cand[0]]  # (C,)
        cuts.append(_quietest(cand, quiet))
    ends = [cut * spt for cut in cuts[1:]] + [n_samples]
    return [(cut * spt, end) for cut, end in zip(cuts, ends)]


def _coverable(rest: np.ndarray, max_tokens: int, min_tokens: int, min_last: int) -> np.ndarray:
    """Whether `rest` (R,) tokens (>= 1, the last with the tail) split into segments of at most
    `max_tokens`, each of at least `min_tokens` but the last, of at least `min_last`: with the
    fewest segments, ceil(rest / max_tokens), whose lower bound is the least."""
    pieces = -(-rest // max_tokens)
    return (pieces - 1) * min_tokens + min_last <= rest


def _boundary_energy(wav: np.ndarray, scale: float, spt: int, tokens: int, lo: int, hi: int) -> np.ndarray:
    """Mean square over the SMOOTH_TOKENS tokens centred on each token boundary lo..hi, (hi-lo+1,);
    tokens past either end of the input repeat the end token's value."""
    half = SMOOTH_TOKENS // 2
    first, last = max(0, lo - half), min(tokens, hi + half)  # the tokens read: [first, last)
    per_block = max(1, ENERGY_BLOCK_SAMPLES // spt)
    energy = np.empty(last - first)  # (tokens read,)
    for a in range(first, last, per_block):
        b = min(last, a + per_block)
        x = wav[a * spt : b * spt].reshape(b - a, spt).astype(np.float64)  # (block tokens, spt)
        # float64 sums of squares are exact for int16-grid audio, whatever the summing order
        energy[a - first : b - first] = np.einsum("ij,ij->i", x, x) * scale / spt
    if not np.isfinite(energy).all():
        energy[~np.isfinite(energy)] = np.inf  # NaN or Inf audio is never quiet
    if first > lo - half or last < hi + half:
        energy = np.pad(energy, (first - (lo - half), hi + half - last), mode="edge")
    return np.convolve(energy, np.full(2 * half, 1 / (2 * half)), mode="valid")  # (hi-lo+1,)


def _quietest(cand: np.ndarray, quiet: np.ndarray) -> int:
    """The quietest of the candidates (C,) by `quiet` (C,): of those within QUIET_TOLERANCE of
    the least, the centre of the latest run of consecutive positions (the later of two middles)."""
    best = quiet.argmin()
    tied = cand[quiet <= quiet[best] * QUIET_TOLERANCE]
    if len(tied) == 1:
        return int(cand[best])
    if len(tied) == len(cand):  # no stretch quieter than the rest (a steady tone, dense music):
        return int(cand[-1])  # no pause to aim for, so the longest segment, as equal cuts give
    breaks = np.flatnonzero(np.diff(tied) != 1)
    first = tied[breaks[-1] + 1] if len(breaks) else tied[0]
    return int((first + tied[-1] + 1) // 2)
