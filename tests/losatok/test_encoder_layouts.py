"""Semantic-encoder checkpoints in both layouts (reference and MiDashengLM) load strictly and
give the same latents."""

import logging

import pytest
import torch

from losatok import LoSATok, load_checkpoint, load_published, load_semantic_encoder, save_checkpoint, tiny
from losatok.checkpoint import CheckpointError

BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _trained_like(seed: int, layer_scale: bool = False) -> LoSATok:
    torch.manual_seed(seed)
    model = LoSATok(tiny()).eval()
    encoder = model.semantic_encoder.encoder
    if layer_scale:
        encoder.enable_layer_scale()
    with torch.no_grad():  # non-trivial statistics and gammas, so that each must load to match
        bn = encoder.init_bn[1]
        bn.running_mean.uniform_(-50, -20)
        bn.running_var.uniform_(50, 200)
        bn.num_batches_tracked.fill_(1234)
        for name, param in encoder.named_parameters():
            if name.endswith(("ls1.gamma", "ls2.gamma")):
                param.uniform_(0.2, 2.0)
    return model


def reference_file(model: LoSATok) -> dict[str, torch.Tensor]:
    """`semantic_encoder.pth` as the reference repository's stand-in encoder saves it."""
    state = {k: v.clone() for k, v in model.semantic_encoder.state_dict().items()}
    assert {f"encoder.init_bn.1.{k}" for k in BN_KEYS} <= set(state)
    assert {"encoder.front_end.0.spectrogram.window", "encoder.front_end.0.mel_scale.fb"} <= set(state)
    return state


def midashenglm_file(model: LoSATok) -> dict[str, torch.Tensor]:
    """The same weights as MiDashengLM's audio encoder holds them: a bare BatchNorm2d `init_bn`,
    no front-end buffers (non-persistent there), `blocks.N.ls{1,2}.gamma` when it has LayerScale."""
    out = {}
    for key, value in model.semantic_encoder.state_dict().items():
        if key.startswith("encoder.front_end."):
            continue
        if key.startswith("encoder.init_bn.1."):
            key = "encoder.init_bn." + key.removeprefix("encoder.init_bn.1.")
        out[key] = value.clone()
    assert {f"encoder.init_bn.{k}" for k in BN_KEYS} <= set(out)
    assert not any(k.startswith(("encoder.front_end", "encoder.init_bn.1.")) for k in out)
    return out


@pytest.fixture
def wav() -> torch.Tensor:
    torch.manual_seed(11)
    return torch.randn(24_000) * 0.1


@pytest.mark.parametrize("layer_scale", [False, True])
def test_both_layouts_load_strictly_and_give_the_same_latents(tmp_path, wav, layer_scale):
    source = _trained_like(1, layer_scale)
    expected = source.encode(wav)
    results = {}
    for layout, build in (("reference", reference_file), ("midashenglm", midashenglm_file)):
        path = tmp_path / f"{layout}.pth"
        torch.save({"state_dict": build(source)}, path)
        target = _trained_like(2)  # other weights everywhere, no LayerScale yet
        target.dasheng_tokenizer.load_state_dict(source.dasheng_tokenizer.state_dict())
        for fc in ("fc_a", "fc_mu", "fc_logvar"):
            getattr(target, fc).load_state_dict(getattr(source, fc).state_dict())
        report = load_semantic_encoder(target, path)
        assert report.ok and report.encoder_layout == layout
        results[layout] = target.encode(wav)
    for layout, result in results.items():
        for name in ("semantic_high", "semantic_low", "z", "logvar"):
            assert torch.equal(getattr(result, name), getattr(expected, name)), (layout, name)


def test_layer_scale_gammas_change_the_output_so_they_must_be_loaded(wav):
    with_ls = _trained_like(1, layer_scale=True)
    without = _trained_like(1, layer_scale=False)
    assert not torch.allclose(with_ls.encode(wav).semantic_high, without.encode(wav).semantic_high)


def test_our_checkpoint_with_layer_scale_round_trips(tmp_path, wav):
    source = _trained_like(3, layer_scale=True)
    save_checkpoint(source, tmp_path / "ours.pt")
    assert torch.equal(load_checkpoint(tmp_path / "ours.pt").encode(wav).z, source.encode(wav).z)


def test_a_whole_model_file_with_the_encoder_in_midashenglm_layout(tmp_path, wav, caplog):
    source = _trained_like(4, layer_scale=True)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("semantic_encoder.")}
    state |= {f"semantic_encoder.{k}": v for k, v in midashenglm_file(source).items()}
    torch.save(state, tmp_path / "whole.pth")
    with caplog.at_level(logging.INFO, logger="losatok.encoder_layouts"):
        loaded = load_published(tmp_path / "whole.pth", tiny())
    assert "midashenglm layout" in caplog.text
    assert torch.equal(loaded.encode(wav).z, source.encode(wav).z)
    assert not any(p.requires_grad for p in loaded.semantic_encoder.parameters())  # gammas frozen too


def test_computed_buffers_may_be_absent_in_the_reference_layout_too(tmp_path, wav):
    source = _trained_like(5)
    state = {k: v for k, v in reference_file(source).items() if ".front_end." not in k}
    torch.save({"state_dict": state}, tmp_path / "no_buffers.pth")
    target = _trained_like(5)
    report = load_semantic_encoder(target, tmp_path / "no_buffers.pth")
    assert report.ok and report.encoder_layout == "reference"


@pytest.mark.parametrize("layout", ["reference", "midashenglm"])
def test_each_layout_is_strict(tmp_path, layout):
    build = reference_file if layout == "reference" else midashenglm_file
    source = _trained_like(6)

    extra = build(source) | {"encoder.blocks.0.attn.rel_pos": torch.zeros(3)}
    torch.save({"state_dict": extra}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\): encoder\.blocks\.0\.attn\.rel_pos"):
        load_semantic_encoder(_trained_like(7), tmp_path / "extra.pth")

    short = build(source)
    del short["encoder.blocks.1.mlp.fc2.bias"]
    torch.save({"state_dict": short}, tmp_path / "short.pth")
    with pytest.raises(CheckpointError, match=r"missing key\(s\): encoder\.blocks\.1\.mlp\.fc2\.bias"):
        load_semantic_encoder(_trained_like(7), tmp_path / "short.pth")

    partial_ls = build(source) | {"encoder.blocks.0.ls1.gamma": torch.ones(64)}
    torch.save({"state_dict": partial_ls}, tmp_path / "partial_ls.pth")
    with pytest.raises(CheckpointError, match=r"missing key\(s\): encoder\.blocks\.0\.ls2\.gamma"):
        load_semantic_encoder(_trained_like(7), tmp_path / "partial_ls.pth")


def test_a_file_mixing_both_layouts_is_refused(tmp_path):
    source = _trained_like(8)
    mixed = reference_file(source) | {"encoder.init_bn.weight": torch.ones(64)}
    torch.save({"state_dict": mixed}, tmp_path / "mixed.pth")
    with pytest.raises(CheckpointError, match="mix both encoder layouts"):
        load_semantic_encoder(_trained_like(9), tmp_path / "mixed.pth")
