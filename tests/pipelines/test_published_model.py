"""`model=official` with no checkpoint: the pipeline encodes with the published file from the Hub
cache (offline, a cache this test fills) and its run identity names that file and commit."""

import dataclasses

import numpy as np
import pytest
import torch

from losatok import LoSATok, tiny
from losatok.config import PRESETS
from losatok.hub import HubError
from losatok.testing import fill_hub_cache
from losatok_data.card import sha256_file
from pipelines.builders import check
from pipelines.config import FieldsConfig, ModelConfig, SourceConfig, TokenizeConfig
from pipelines.encode import SegmentEncoder
from pipelines.run import model_config, run_identity

COMMIT_A, COMMIT_B = "a" * 40, "b" * 40
TINY_OFFICIAL = dataclasses.replace(tiny(), preset="official")  # official code path, test-sized


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(PRESETS, "official", lambda: TINY_OFFICIAL)
    return tmp_path / "hf" / "hub"


def _published(seed: int) -> LoSATok:
    torch.manual_seed(seed)
    return LoSATok(TINY_OFFICIAL).eval()


def test_official_run_encodes_with_the_cached_file_and_names_it(hub):
    source = _published(1)
    snapshot = fill_hub_cache(hub, {"losatok_kl1e-3.pth": {"state_dict": source.state_dict()}}, COMMIT_A)
    config = TokenizeConfig(source=SourceConfig(path="/corpus"), model=ModelConfig(preset="official"))
    check(config)

    identity = run_identity(config, model_config(config))
    assert identity.tokenizer["checkpoint_source"] == f"hf://wxzyd123/LoSATok/losatok_kl1e-3.pth@{COMMIT_A}"
    assert identity.tokenizer["checkpoint_sha256"] == sha256_file(str(snapshot / "losatok_kl1e-3.pth"))
    assert identity.seed is None  # weights, not a seed, define the model

    wav = (np.random.default_rng(0).standard_normal(24_000) * 0.1).astype(np.float32)
    encoded = SegmentEncoder(config.model, FieldsConfig(), max_frames=1000, device="cpu").encode([wav])[0]
    expected = source.encode(torch.from_numpy(wav)).z[0]
    np.testing.assert_allclose(encoded.arrays["latent"], expected.numpy().astype(np.float16), atol=1e-3)

    # a new commit on main is another tokenizer: a rerun against the old dataset is refused
    fill_hub_cache(hub, {"losatok_kl1e-3.pth": _published(2).state_dict()}, COMMIT_B)
    assert run_identity(config, model_config(config)).differences(identity)
    pinned = dataclasses.replace(config, model=dataclasses.replace(config.model, revision=COMMIT_A))
    assert run_identity(pinned, model_config(pinned)) == identity


def test_official_run_offline_without_the_file_fails_in_one_line(hub):
    config = TokenizeConfig(source=SourceConfig(path="/corpus"), model=ModelConfig(preset="official"))
    with pytest.raises(HubError, match=r"losatok_kl1e-3\.pth from Hugging Face repo wxzyd123/LoSATok") as err:
        run_identity(config, model_config(config))
    assert str(hub) in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, FileNotFoundError)  # losatok-tokenize prints it as one line, exit 2
