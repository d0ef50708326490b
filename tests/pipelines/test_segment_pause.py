"""Cuts at pauses (`pause_bounds`): the segment contract over many random inputs, and cuts that
land in the pauses of real long-form speech where equal cuts do not."""

import wave

import numpy as np
import pytest

from losatok_input.testing import long_form_speech, spoken_sentences, synth_music
from pipelines.segment import pause_bounds, segment_bounds

RATE, TOKEN = 16_000, 640

SENTENCES = [
    "The river runs past the old mill",
    "Seven small boats sail into the harbour",
    "She reads the letter twice before dinner",
    "Nobody knew where the key was hidden",
    "A cold wind blows across the northern hills",
    "The baker opens his shop at dawn",
    "Bright lamps hang over the empty street",
    "We counted every star above the field",
]


@pytest.fixture(scope="module")
def sentences(tmp_path_factory) -> list[np.ndarray]:
    """The sentences spoken by espeak-ng at 16 kHz, int16, trimmed of their leading and trailing
    silence so that the only pauses in a long recording are the ones put between them."""
    return spoken_sentences(tmp_path_factory.mktemp("sentences"), SENTENCES, RATE)


def long_form(
    sentences: list[np.ndarray], seconds: float, seed: int, noise_dbfs: float | None = None
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Sentences joined by pauses of 0.3 to 0.8 s (`long_form_speech`), with white noise at
    `noise_dbfs` (RMS) over all of it, or digital silence in the pauses if None.
    Returns (int16 samples (S,), [(start, end)] of each pause in samples)."""
    wav, starts, ends = long_form_speech(sentences, seconds, seed, (0.3, 0.8), RATE)
    if noise_dbfs is not None:
        noise = np.random.default_rng(seed).standard_normal(len(wav)) * 32768 * 10 ** (noise_dbfs / 20)
        wav = np.clip(wav + noise, -32768, 32767).astype(np.int16)
    return wav, list(zip(starts.tolist(), ends.tolist(), strict=True))


def in_pause(cut: int, pauses: list[tuple[int, int]], slack: int = TOKEN) -> bool:
    return any(start - slack <= cut <= end + slack for start, end in pauses)


def check_contract(bounds, n_samples, sample_rate, max_seconds, min_seconds, spt):
    """Coverage, the token grid and the maximum; returns the segments' lengths in samples."""
    max_tokens = max(1, int(max_seconds * sample_rate) // spt)
    assert bounds[0][0] == 0 and bounds[-1][1] == n_samples
    assert all(end == start for (_, end), (start, _) in zip(bounds, bounds[1:]))
    assert all(start % spt == 0 for start, _ in bounds)
    assert all(end > start for start, end in bounds) or n_samples == 0
    assert all((end - start) // spt <= max_tokens for start, end in bounds)
    if n_samples // spt <= max_tokens:
        assert len(bounds) == 1
    return [end - start for start, end in bounds]


def splits_keeping(n_samples: int, max_tokens: int, spt: int, min_samples: int) -> bool:
    """Whether any valid split of `n_samples` keeps every segment >= `min_samples`, by brute force."""
    tokens = n_samples // spt
    fits = [True] + [False] * tokens  # fits[c]: tokens [0, c) split into segments of >= min
    shortest = max(1, -(-min_samples // spt))
    for c in range(1, tokens):
        fits[c] = any(fits[c - k] for k in range(shortest, min(max_tokens, c) + 1))
    starts = range(max(0, tokens - max_tokens), tokens)  # where the last segment may start
    return any(fits[c] and n_samples - c * spt >= min_samples for c in starts)


def best_minimum(n_samples: int, max_tokens: int, spt: int) -> int:
    """The longest minimum segment length (samples) of any valid split (keeping is monotone)."""
    lo, hi = 1, n_samples  # splits_keeping(lo) always holds
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if splits_keeping(n_samples, max_tokens, spt, mid) else (lo, mid - 1)
    return lo


def random_audio(rng, n_samples: int) -> np.ndarray:
    """int16 audio (S,) whose loudness jumps every few samples, with runs of digital silence
    (ties) and of equal loudness."""
    level = rng.choice([0, 0, 3, 100, 3000, 30000], size=n_samples // 7 + 1).repeat(7)[:n_samples]
    return (rng.uniform(-1, 1, n_samples) * level).astype(np.int16)


def test_contract_over_random_inputs():
    """Coverage, grid, max and min (where any split allows it) over 400 random cases, small
    tokens so a brute force can say what minimum was achievable; int16 and float32 agree."""
    rng = np.random.default_rng(23)
    for case in range(400):
        spt, sample_rate = int(rng.choice([1, 3, 4, 10])), 100
        max_seconds = float(rng.uniform(0.05, 2.0))
        min_seconds = float(rng.uniform(0, max_seconds)) if case % 4 else 0.0
        n_samples = int(rng.integers(0, 12 * max_seconds * sample_rate))
        pcm = random_audio(rng, n_samples)
        bounds = pause_bounds(pcm, sample_rate, max_seconds, min_seconds, samples_per_token=spt)
        assert (
            pause_bounds(pcm.astype(np.float32) / 32768, sample_rate, max_seconds, min_seconds, spt) == bounds
        )
        assert pause_bounds(pcm, sample_rate, max_seconds, min_seconds, spt) == bounds  # deterministic
        lengths = check_contract(bounds, n_samples, sample_rate, max_seconds, min_seconds, spt)
        if len(bounds) > 1:
            max_tokens = max(1, int(max_seconds * sample_rate) // spt)
            wanted = int(np.ceil(min_seconds * sample_rate - 1e-6))
            if splits_keeping(n_samples, max_tokens, spt, wanted):
                assert min(lengths) >= wanted, (case, bounds)
            else:  # min_seconds lowered only as far as it must be, to a token
                achievable = best_minimum(n_samples, max_tokens, spt)
                assert min(lengths) >= achievable - spt, (case, bounds, achievable)


def test_contract_at_the_real_token_size():
    """16 kHz and 640-sample tokens, lengths from under a token to minutes, pauses and none."""
    rng = np.random.default_rng(7)
    for _ in range(150):
        max_seconds = float(rng.choice([1.0, 5.0, 10.0, 30.0]))
        min_seconds = float(rng.choice([0.0, 0.5, max_seconds / 5, max_seconds / 2, max_seconds]))
        n_samples = int(rng.integers(0, 8 * max_seconds * RATE))
        pcm = random_audio(rng, n_samples)
        bounds = pause_bounds(pcm, RATE, max_seconds, min_seconds)
        assert pause_bounds(pcm.astype(np.float32) / 32768, RATE, max_seconds, min_seconds) == bounds
        lengths = check_contract(bounds, n_samples, RATE, max_seconds, min_seconds, TOKEN)
        if len(bounds) > 1 and min_seconds < max_seconds:  # min = max can be impossible
            assert min(lengths) >= min_seconds * RATE


def test_remainder_just_over_max_keeps_both_pieces_valid():
    """1.1 x max of speech-like noise: two pieces, each within max and at least min, even when
    min is more than the last third would leave (the window slides earlier)."""
    rng = np.random.default_rng(1)
    pcm = (rng.standard_normal(int(11 * RATE)) * 3000).astype(np.int16)
    for min_seconds in (0.0, 1.0, 3.0, 5.0):
        bounds = pause_bounds(pcm, RATE, 10.0, min_seconds)
        lengths = check_contract(bounds, len(pcm), RATE, 10.0, min_seconds, TOKEN)
        assert len(bounds) == 2 and min(lengths) >= min_seconds * RATE


def test_short_and_tiny_inputs_are_one_segment():
    assert pause_bounds(np.zeros(0, np.float32), RATE, 10.0, 2.0) == [(0, 0)]
    assert pause_bounds(np.zeros(100, np.int16), RATE, 10.0, 2.0) == [(0, 100)]
    assert pause_bounds(np.zeros(RATE, np.int16), RATE, 10.0, 2.0) == [(0, RATE)]  # under min
    assert pause_bounds(np.zeros(250 * TOKEN + 7, np.int16), RATE, 10.0, 2.0) == [(0, 250 * TOKEN + 7)]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        pause_bounds(np.zeros((2, 100), np.float32), RATE, 10.0, 2.0)
    with pytest.raises(ValueError):
        pause_bounds(np.zeros(100, np.float32), RATE, 10.0, 20.0)
    with pytest.raises(TypeError):
        pause_bounds(np.zeros(100, np.int32), RATE, 10.0, 2.0)


def test_silent_pause_is_cut_in_its_middle():
    """Loud noise with one 1 s gap of digital silence in the window: the cut is its centre."""
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(25 * RATE) * 3000).astype(np.int16)
    pcm[8 * RATE : 9 * RATE] = 0
    (_, cut), _ = pause_bounds(pcm, RATE, 10.0, 1.0)[:2]
    assert abs(cut - 8.5 * RATE) <= TOKEN


def test_in_steady_noise_the_latest_pause_wins():
    """Two pauses in the window over a noise floor, the later one 1 dB louder (within
    QUIET_TOLERANCE): the cut is the later one's centre, so segments stay long, not the argmin."""
    rng = np.random.default_rng(0)
    wav = rng.standard_normal(25 * RATE) * 3000
    wav[int(7.0 * RATE) : int(8.0 * RATE)] = rng.standard_normal(RATE) * 90
    wav[int(8.5 * RATE) : int(9.5 * RATE)] = rng.standard_normal(RATE) * 100
    (_, cut), _ = pause_bounds(wav.astype(np.int16), RATE, 10.0, 1.0)[:2]
    assert abs(cut - 9.0 * RATE) <= TOKEN


@pytest.mark.parametrize("noise_dbfs", [None, -50.0])
def test_pause_cuts_land_in_pauses_of_long_speech(sentences, noise_dbfs):
    """75 s of espeak-ng sentences joined by 0.3-0.8 s pauses: every cut at max_seconds=10 falls
    inside a pause (to a token), where most equal cuts fall inside words."""
    pcm, pauses = long_form(sentences, 75.0, seed=3, noise_dbfs=noise_dbfs)
    bounds = pause_bounds(pcm, RATE, 10.0, 2.0)
    check_contract(bounds, len(pcm), RATE, 10.0, 2.0, TOKEN)
    assert pause_bounds(pcm.astype(np.float32) / 32768, RATE, 10.0, 2.0) == bounds
    cuts = [start for start, _ in bounds[1:]]
    assert len(cuts) >= 7
    assert [c for c in cuts if not in_pause(c, pauses)] == []
    equal = [start for start, _ in segment_bounds(len(pcm), RATE, 10.0)[1:]]
    assert sum(in_pause(c, pauses) for c in equal) <= len(equal) / 2


def test_audio_without_pauses_still_gets_valid_bounds(tmp_path):
    """Music (sox, no pause anywhere) and a steady sine: bounds keep the contract, segments are
    at least two thirds of max where the input allows."""
    with wave.open(str(synth_music(tmp_path / "m.wav", seconds=47.0, sample_rate=RATE, channels=1))) as f:
        music = np.frombuffer(f.readframes(f.getnframes()), dtype=np.int16)
    t = np.arange(47 * RATE) / RATE
    sine = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for audio in (music, sine):
        bounds = pause_bounds(audio, RATE, 10.0, 2.0)
        lengths = check_contract(bounds, len(audio), RATE, 10.0, 2.0, TOKEN)
        assert min(lengths[:-1]) >= 2 / 3 * 10.0 * RATE - TOKEN
        assert min(lengths) >= 2.0 * RATE


def test_a_steady_tone_is_cut_at_max_seconds_like_equal_cuts():
    """Nothing quieter anywhere: no pause to aim for, so segments are as long as allowed (a window
    centre would make 20 % more of them, as a first version did)."""
    t = np.arange(30 * 60 * RATE) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    bounds = pause_bounds(tone, RATE, 30.0, 0.5)
    assert len(bounds) == len(segment_bounds(len(tone), RATE, 30.0)) == 60
    assert all(end - start == 30 * RATE for start, end in bounds[:-1])
