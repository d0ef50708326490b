"""Published weights through the Hugging Face Hub cache: offline, against a cache this test fills
with tiny files in the Hub's own layout. Nothing is downloaded."""

import dataclasses

import pytest
import torch

from losatok import LoSATok, load_model, official, tiny
from losatok.checkpoint import CheckpointError
from losatok.hub import HubError, fetch_official, hub_cache_dir, load_official
from losatok.testing import fill_hub_cache

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40
# the tiny dims under the official name: the code path `model=official` takes, at test size
TINY_OFFICIAL = dataclasses.replace(tiny(), preset="official")


def published(seed: int) -> LoSATok:
    torch.manual_seed(seed)
    return LoSATok(TINY_OFFICIAL).eval()


def without_encoder(model: LoSATok) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if not k.startswith("semantic_encoder.")}


def midashenglm_encoder_file(model: LoSATok) -> dict:
    """semantic_encoder.pth as MiDashengLM's encoder saves it (bare init_bn, no front end)."""
    state = {}
    for key, value in model.semantic_encoder.state_dict().items():
        if key.startswith("encoder.front_end."):
            continue
        state[key.replace("encoder.init_bn.1.", "encoder.init_bn.")] = value
    return {"state_dict": state}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An offline Hub cache under tmp_path; HF_HOME and HF_HUB_CACHE point there."""
    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.fixture
def wav():
    torch.manual_seed(21)
    return torch.randn(20_000) * 0.1


def test_official_without_a_path_loads_the_cached_published_file(hub, wav):
    source = published(1)
    fill_hub_cache(hub, {"losatok_kl1e-3.pth": {"state_dict": source.state_dict()}}, COMMIT_A)
    assert hub_cache_dir() == hub
    model = load_model(None, TINY_OFFICIAL)
    assert torch.equal(model.encode(wav).z, source.encode(wav).z)
    files = fetch_official()
    assert files.semantic_encoder is None  # the whole-model file holds the encoder
    assert files.describe() == f"hf://wxzyd123/LoSATok/losatok_kl1e-3.pth@{COMMIT_A}"
    assert files.model.path.parent == hub / "models--wxzyd123--LoSATok" / "snapshots" / COMMIT_A


def test_the_kl1e2_variant_by_name_and_a_pinned_revision(hub, wav):
    old, new, other = published(1), published(2), published(3)
    fill_hub_cache(hub, {"losatok_kl1e-3.pth": old.state_dict()}, COMMIT_A, ref=None)
    fill_hub_cache(
        hub, {"losatok_kl1e-3.pth": new.state_dict(), "losatok_kl1e-2.pth": other.state_dict()}, COMMIT_B
    )
    z = {name: m.encode(wav).z for name, m in (("old", old), ("new", new), ("other", other))}
    assert torch.equal(load_official(TINY_OFFICIAL).encode(wav).z, z["new"])  # main -> COMMIT_B
    assert torch.equal(load_official(TINY_OFFICIAL, revision=COMMIT_A).encode(wav).z, z["old"])
    assert torch.equal(load_model(None, TINY_OFFICIAL, variant="kl1e-2").encode(wav).z, z["other"])
    with pytest.raises(ValueError, match=r"unknown LoSATok variant 'kl1e-4'.*kl1e-2"):
        load_official(TINY_OFFICIAL, variant="kl1e-4")


def test_the_semantic_encoder_file_is_fetched_when_the_whole_model_lacks_it(hub, wav):
    source = published(4)
    fill_hub_cache(
        hub,
        {
            "losatok_kl1e-3.pth": without_encoder(source),
            "semantic_encoder.pth": midashenglm_encoder_file(source),
        },
        COMMIT_A,
    )
    files = fetch_official()
    assert files.semantic_encoder is not None and files.semantic_encoder.revision == COMMIT_A
    assert torch.equal(load_model(None, TINY_OFFICIAL).encode(wav).z, source.encode(wav).z)


def test_offline_and_not_cached_is_one_line_naming_file_repo_and_cache(hub):
    for filename in ("losatok_kl1e-2.pth", "semantic_encoder.pth"):
        source = published(5)
        if filename == "semantic_encoder.pth":  # the model file is there, its encoder file is not
            fill_hub_cache(hub, {"losatok_kl1e-3.pth": without_encoder(source)}, COMMIT_A)
        with pytest.raises(HubError) as err:
            load_model(None, TINY_OFFICIAL, variant=None if filename.startswith("sem") else "kl1e-2")
        message = str(err.value)
        assert "\n" not in message
        assert filename in message and "wxzyd123/LoSATok" in message and str(hub) in message
        assert "HF_HUB_OFFLINE" in message
        assert isinstance(err.value, (CheckpointError, FileNotFoundError))


def test_a_file_that_does_not_fit_is_refused_before_the_model_is_built(hub):
    """The real official dims against a tiny file: checked on a weightless skeleton, named keys."""
    fill_hub_cache(hub, {"losatok_kl1e-3.pth": published(6).state_dict()}, COMMIT_A)
    with pytest.raises(CheckpointError, match=r"losatok_kl1e-3\.pth@a+ does not fit the official LoSATok"):
        load_official(official())


def test_reconstruct_preset_official_uses_the_published_weights(
    hub, audio_dir, tmp_path, monkeypatch, capsys
):
    from jobs.reconstruct import main
    from losatok.config import PRESETS

    monkeypatch.setitem(PRESETS, "official", lambda: TINY_OFFICIAL)
    args = [str(audio_dir / "speech.mp3"), str(tmp_path / "out.wav"), "--preset", "official"]
    with pytest.raises(SystemExit) as exited:  # nothing cached yet
        main([*args, "--variant", "kl1e-2"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: cannot get losatok_kl1e-2.pth" in err and str(hub) in err

    fill_hub_cache(hub, {"losatok_kl1e-2.pth": published(7).state_dict()}, COMMIT_A)
    assert main([*args, "--variant", "kl1e-2", "--revision", COMMIT_A]) == 0
    captured = capsys.readouterr()
    assert "UNTRAINED" not in captured.err
    assert (tmp_path / "out.wav").stat().st_size > 0


def test_a_corrupt_cached_file_is_named(hub):
    snapshot = fill_hub_cache(hub, {"losatok_kl1e-3.pth": {}}, COMMIT_A)
    blob = (snapshot / "losatok_kl1e-3.pth").resolve()
    blob.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*losatok_kl1e-3\.pth"):
        load_official(TINY_OFFICIAL)
