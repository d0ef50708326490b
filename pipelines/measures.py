"""Cheap measures of a segment's audio (level, peak, clipping, silence, identity), taken in the
decode stage while its samples are at hand, to be stored as index columns.

numpy and xxhash (pyloudnorm only when loudness is asked for); no torch. Costs and the
choices behind them: bench/quality_cost.py and docs/quality.md.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import numpy as np
import xxhash

from pipelines.records import compact_pcm

# JSON cannot hold -inf; -120 dBFS lies far below 16-bit PCM's own quantization noise (an
# LSB's RMS / sqrt(12), about -101 dBFS), so only digital silence or a few stray LSBs reach it
RMS_FLOOR_DB = -120.0
# -0.0087 dBFS: int16's largest positive sample 32767/32768 (-0.00027 dBFS) must count as
# clipped, and so must a clipped plateau a few LSBs under the rail (dither, a DC offset);
# an unclipped master rarely peaks within 0.01 dB of full scale (most leave ~1 dB)
CLIP_LEVEL = 0.999
# a frame quieter than this holds no speech or music at any usual recording level (speech
# sits near -20 to -30 dBFS RMS) but does hold room tone of a clean recording and dither;
# a pause in a noisy room stays above it: this counts silence, pause_bounds finds pauses
SILENCE_DB = -60.0
# 20 ms (320 samples at 16 kHz, half a 25 Hz token): short enough that a pause between
# words spans whole frames, long enough to hold a period of the lowest voices (~60 Hz)
FRAME_SECONDS = 0.02
# float32 input is first checked on this many samples for being int16 in disguise (k/32768):
# decoded-then-resampled audio fails within a few samples, so a larger probe only costs
PCM_PROBE = 256
# the loudness meter's gating block (ITU-R BS.1770-4): a shorter input has no loudness
LOUDNESS_BLOCK_SECONDS = 0.4

_INT16_SCALE = 32768  # full scale of int16 PCM: x / 2**15, as `records.compact_pcm`
# content_hash is XXH3-128 (xxhash): 2 us for 2.5 s of 16 kHz int16, where hashlib's fastest
# here (sha1) takes 48 us, half the cost of all the measures (bench/quality_cost.py). 128 bits:
# no accidental collision among 2**40 segments (p < 2**-48). It names content, it guards nothing
_TAG_PCM = b"s16le:"  # prefix of samples hashed as 16-bit signed little-endian integers
_TAG_FLOAT = b"f32le:"  # prefix of samples hashed as IEEE-754 float32 little-endian


@dataclass(frozen=True)
class AudioMeasures:
    """What `measure` finds in one segment; `as_dict` is what an index row holds."""

    rms_db: float  # dBFS: full-scale square wave 0, full-scale sine -3.01; >= RMS_FLOOR_DB
    peak: float  # max |x| in full scale: 0..1 (over 1 for float sources that overshoot)
    clipped_fraction: float  # of the samples, those with |x| >= CLIP_LEVEL of full scale
    silent_fraction: float  # of the samples, those in frames quieter than SILENCE_DB (all silent: 1.0)
    content_hash: str  # 32 hex digits naming the samples (`content_hash`): same audio, same hash
    loudness_lufs: float | None = None  # BS.1770 integrated loudness; None: not asked, < 400 ms or silent

    def as_dict(self) -> dict[str, float | str | None]:
        """The measures as plain Python values, ready for JSON or an index row."""
        return asdict(self)


def measure(wav: np.ndarray, sample_rate: int = 16_000, loudness: bool = False) -> AudioMeasures:
    """Measure one segment: `wav` is (S,) float32 in [-1, 1] or int16 PCM (`records.compact_pcm`).

    Float32 samples that are all exactly k / 32768 are measured as the int16 PCM they equal, so
    both dtypes of the same audio give equal measures and hashes. Frames are FRAME_SECONDS long
    (rounded to whole samples), consecutive from the first sample; a partial last frame is a frame
    of its own, judged by the RMS of the samples it holds, and weighs by its length: so
    silent_fraction is the fraction of samples that lie in silent frames. An empty `wav` is
    digital silence. `loudness`: also BS.1770 integrated loudness with pyloudnorm (not a
    dependency of the project: the `loudness` extra; it costs about 4x a 16 kHz wav's whole
    decode stage).
    Returns plain Python floats and str.
    """
    if wav.ndim != 1:
        raise ValueError(f"expected (S,) samples, got shape {wav.shape}")
    wav = _compact(wav)  # int16 when that is exact
    pcm = wav.dtype == np.int16
    scale = _INT16_SCALE if pcm else 1
    digest = _digest(wav)
    n = len(wav)
    if n == 0:
        return AudioMeasures(RMS_FLOOR_DB, 0.0, 0.0, 1.0, digest)

    # every level below is in the input's own units (int16 counts or float full scale): one pass
    # of squares, no float64 copy; the int16 cast to float32 is exact and its squares' frame sums
    # (<= 2**30 * frame) keep float32's 24-bit precision
    samples = wav.astype(np.float32) if pcm else wav  # (S,)
    frame = max(1, round(FRAME_SECONDS * sample_rate))
    whole = n - n % frame
    frames = samples[:whole].reshape(-1, frame)  # (F, frame), a view
    energy = np.einsum("ij,ij->i", frames, frames)  # (F,) sums of squares
    tail = samples[whole:]  # (S - whole,), the partial last frame
    tail_energy = float(np.dot(tail, tail)) if len(tail) else 0.0
    total = float(energy.sum(dtype=np.float64)) + tail_energy

    mean_square = total / n / scale**2
    rms_db = 10.0 * math.log10(mean_square) if mean_square > 0 else RMS_FLOOR_DB
    quiet = 10.0 ** (SILENCE_DB / 10.0) * scale**2  # mean square of a frame at SILENCE_DB
    silent = int(np.count_nonzero(energy < quiet * frame)) * frame
    silent += len(tail) if len(tail) and tail_energy < quiet * len(tail) else 0

    peak = max(float(wav.max()), -float(wav.min())) / scale  # no abs(): -32768 has no int16 opposite
    clipped = 0
    if peak >= CLIP_LEVEL:  # only then can a sample be; most audio never pays for the count
        rail = math.ceil(CLIP_LEVEL * _INT16_SCALE) if pcm else np.float32(CLIP_LEVEL)
        clipped = int(np.count_nonzero(wav >= rail)) + int(np.count_nonzero(wav <= -rail))

    return AudioMeasures(
        rms_db=max(RMS_FLOOR_DB, rms_db),
        peak=peak,
        clipped_fraction=clipped / n,
        silent_fraction=silent / n,
        content_hash=digest,
        loudness_lufs=integrated_loudness(wav, sample_rate) if loudness else None,
    )


def content_hash(wav: np.ndarray) -> str:
    """The 128-bit identity of (S,) samples, as 32 lowercase hex digits.

    int16 samples x: XXH3-128 of b"s16le:" + x as 16-bit signed little-endian. float32 samples
    that are all k / 32768 with k an int16 are hashed as those k (so the two dtypes of one audio
    agree; -0.0 is 0); any other float32: XXH3-128 of b"f32le:" + x as IEEE-754 float32
    little-endian, never equal to an int16 hash (the prefixes differ).
    Python: xxhash.xxh3_128_hexdigest(b"s16le:" + k.astype("<i2").tobytes()).
    """
    return _digest(_compact(wav))


def _compact(wav: np.ndarray) -> np.ndarray:
    """(S,) int16 as it is; float32 as the int16 it equals (k / 32768), else as it is."""
    if wav.dtype == np.float32:
        return compact_pcm(wav, probe=PCM_PROBE)
    if wav.dtype != np.int16:
        raise TypeError(f"expected float32 or int16 samples, got {wav.dtype}")
    return wav


def _digest(wav: np.ndarray) -> str:
    """`content_hash` of samples already through `_compact`."""
    pcm = wav.dtype == np.int16
    data = wav.astype("<i2" if pcm else "<f4", copy=False)  # no copy on a little-endian machine
    digest = xxhash.xxh3_128(_TAG_PCM if pcm else _TAG_FLOAT)
    digest.update(np.ascontiguousarray(data).data)  # no copy either: segments are slices
    return digest.hexdigest()


def integrated_loudness(wav: np.ndarray, sample_rate: int) -> float | None:
    """BS.1770-4 integrated loudness (LUFS) of (S,) float32 or int16 samples, by pyloudnorm;
    None when shorter than one 400 ms gating block or silent (every block gated out)."""
    if len(wav) < LOUDNESS_BLOCK_SECONDS * sample_rate:
        return None
    samples = wav.astype(np.float64) / (_INT16_SCALE if wav.dtype == np.int16 else 1)
    lufs = _meter(sample_rate).integrated_loudness(samples)
    return float(lufs) if math.isfinite(lufs) else None


@functools.lru_cache(maxsize=8)
def _meter(sample_rate: int):  # -> pyloudnorm.Meter, imported only here
    try:
        import pyloudnorm
    except ImportError as error:
        raise ImportError(
            "segment.loudness=true needs pyloudnorm: pip install 'losatok-pipelines[loudness]'"
        ) from error
    return pyloudnorm.Meter(sample_rate)  # BS.1770-4 K-weighting, 400 ms blocks, 75 % overlap
