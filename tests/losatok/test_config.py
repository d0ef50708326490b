import pytest

from losatok.config import LoSATokConfig, official, preset, tiny


def test_official_matches_published_dims():
    c = official()
    assert (c.sample_rate, c.samples_per_token, c.frame_rate) == (16_000, 640, 25.0)
    assert (c.semantic_dim, c.latent_dim, c.semantic_heads, c.semantic_depth) == (1280, 128, 16, 32)
    assert c.chunk_tokens == 252


def test_tiny_keeps_rates_but_shrinks_widths():
    t, o = tiny(), official()
    assert (t.sample_rate, t.samples_per_token) == (o.sample_rate, o.samples_per_token)
    assert t.semantic_dim < o.semantic_dim and t.latent_dim < o.latent_dim


def test_config_round_trips_and_rejects_unknown_keys():
    c = tiny()
    assert LoSATokConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="semantic_dimm"):
        LoSATokConfig.from_dict({**c.to_dict(), "semantic_dimm": 3})


def test_config_hash_tells_configs_apart():
    assert tiny().config_hash() == tiny().config_hash()
    assert tiny().config_hash() != official().config_hash()


def test_inconsistent_grid_is_refused():
    with pytest.raises(ValueError, match="samples_per_token"):
        LoSATokConfig(semantic_hop=200)


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ValueError, match="official"):
        preset("huge")
