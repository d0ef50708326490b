import numpy as np
import pytest

from losatok_data.stats import ChannelStats


def test_merged_stats_equal_stats_of_concatenated_frames():
    rng = np.random.default_rng(0)
    # Workers see different amounts of data with different offsets; one sees nothing.
    parts = [
        rng.normal(loc, scale, (n, 8)) for loc, scale, n in [(100.0, 0.1, 7), (-3.0, 5.0, 300), (0.0, 1.0, 1)]
    ]
    parts.append(np.zeros((0, 8)))
    merged = ChannelStats.merge_all(ChannelStats.of(p) for p in parts)
    everything = np.concatenate(parts)
    assert merged.count == len(everything)
    np.testing.assert_allclose(merged.mean, everything.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(merged.std, everything.std(axis=0), rtol=1e-10)
    # Merge order does not matter, and update is a merge.
    other = ChannelStats.merge_all(ChannelStats.of(p) for p in reversed(parts))
    np.testing.assert_allclose(other.std, merged.std, rtol=1e-12)
    stepwise = ChannelStats.empty(8)
    for p in parts:
        stepwise = stepwise.update(p)
    np.testing.assert_allclose(stepwise.mean, merged.mean, rtol=1e-12)


def test_large_offset_keeps_precision_in_float16_input():
    x = (1000.0 + np.random.default_rng(1).standard_normal((4000, 4))).astype(np.float16)
    halves = ChannelStats.of(x[:1234]).merge(ChannelStats.of(x[1234:]))
    np.testing.assert_allclose(halves.std, x.astype(np.float64).std(axis=0), rtol=1e-9)


def test_dict_round_trip_and_merge_after_it():
    a = ChannelStats.of(np.arange(12.0).reshape(6, 2))
    b = ChannelStats.from_dict(a.to_dict())
    assert b.count == 6
    np.testing.assert_allclose(b.mean, a.mean)
    np.testing.assert_allclose(b.m2, a.m2)


def test_mismatched_dims_refused():
    with pytest.raises(ValueError, match="2 and 3"):
        ChannelStats.empty(2).merge(ChannelStats.empty(3))
    with pytest.raises(ValueError, match=r"\(T, D\)"):
        ChannelStats.of(np.zeros(4))
