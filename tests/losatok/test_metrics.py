import math

import pytest
import torch

from losatok.metrics import mel_distance, semantic_preservation, si_sdr, stft_distance


def tone(seconds: float = 1.0, freq: float = 440.0) -> torch.Tensor:
    t = torch.arange(int(16_000 * seconds)) / 16_000
    return 0.5 * torch.sin(2 * math.pi * freq * t)


def test_identical_signals_score_perfectly():
    x = tone() + 0.01 * torch.randn(16_000)
    assert mel_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert stft_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert si_sdr(x, x) > 100
    assert si_sdr(x, 3.0 * x) > 100  # scale-invariant


def test_distortion_is_ranked():
    x = tone()
    slightly = x + 0.01 * torch.randn_like(x)
    badly = x + 0.3 * torch.randn_like(x)
    assert si_sdr(x, slightly) > si_sdr(x, badly) + 20
    assert mel_distance(x, slightly) < mel_distance(x, badly)
    assert stft_distance(x, slightly) < stft_distance(x, badly)
    assert si_sdr(x, badly) == pytest.approx(
        10 * math.log10(0.125 / 0.09), abs=1.0
    )  # signal power / noise power


def test_semantic_preservation_is_the_mean_cosine():
    h = torch.randn(10, 8)
    assert semantic_preservation(h, 2 * h) == pytest.approx(1.0)
    assert semantic_preservation(h, -h) == pytest.approx(-1.0)
