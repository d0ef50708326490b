"""Every Hydra config of the tokenizer composes and builds; bad keys fail naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from pipelines.builders import build_tokenize_config

CONF = Path(__file__).parents[2] / "pipelines" / "conf"
GROUPS = {
    group.name: sorted(p.stem for p in group.glob("*.yaml")) for group in CONF.iterdir() if group.is_dir()
}
REQUIRED = {"source.path=/data/corpus", "model.checkpoint=/ckpt.pth"}


@pytest.mark.parametrize("group,option", [(g, o) for g, options in GROUPS.items() for o in options])
def test_every_config_option_composes_and_builds(group, option):
    with initialize_config_module("pipelines.conf", version_base=None):
        cfg = compose("tokenize", overrides=[f"{group}={option}", *REQUIRED])
    config = build_tokenize_config(cfg)
    assert config.source.path == "/data/corpus"


def test_missing_source_path_is_named():
    with initialize_config_module("pipelines.conf", version_base=None):
        cfg = compose("tokenize")
    with pytest.raises(ValueError, match="source.path"):
        build_tokenize_config(cfg)


def test_official_without_a_checkpoint_takes_a_published_variant():
    with initialize_config_module("pipelines.conf", version_base=None):
        cfg = compose("tokenize", overrides=["model=official", "source.path=/x"])
        wrong = compose("tokenize", overrides=["model=official", "source.path=/x", "model.variant=kl1e-4"])
    model = build_tokenize_config(cfg).model
    assert model.checkpoint is None and model.variant == "kl1e-3" and model.revision is None
    with pytest.raises(ValueError, match=r"unknown LoSATok variant 'kl1e-4'; published variants"):
        build_tokenize_config(wrong)


def test_unknown_keys_fail_naming_the_key():
    with pytest.raises(ValueError, match="max_secnds"):
        build_tokenize_config({"source": {"path": "/x"}, "segment": {"max_secnds": 3}})
    with pytest.raises(ValueError, match="sinks"):
        build_tokenize_config({"source": {"path": "/x"}, "sinks": {}})
