import pickle

import pytest
import torch

from losatok import (
    LoSATok,
    load_checkpoint,
    load_model,
    load_published,
    load_semantic_encoder,
    save_checkpoint,
    tiny,
)
from losatok.checkpoint import CheckpointError


def published_keys(depth: int, decoder_depth: int) -> set[str]:
    """The whole-model key layout written out from DESIGN.md 1.3, independent of our module code."""
    enc = "semantic_encoder.encoder."
    keys = {
        enc + k
        for k in (
            "front_end.0.spectrogram.window",
            "front_end.0.mel_scale.fb",
            "time_pos_embed",
            "freq_pos_embed",
        )
    }
    keys |= {
        enc + f"init_bn.1.{k}"
        for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    }
    keys |= {enc + f"patch_embed.proj.{k}" for k in ("weight", "bias")} | {
        enc + "norm.weight",
        enc + "norm.bias",
    }
    for n in range(depth):
        for part in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            keys |= {enc + f"blocks.{n}.{part}.{k}" for k in ("weight", "bias")}
    for side in ("downsample", "upsample"):
        keys |= {f"semantic_encoder.bottleneck.{side}.{i}.{k}" for i in (0, 2) for k in ("weight", "bias")}
    tok = "dasheng_tokenizer."
    keys |= {
        tok + "encoder.front_end.mel_spec.spectrogram.window",
        tok + "encoder.front_end.mel_spec.mel_scale.fb",
    }
    for part in (
        "encoder.patch_embed",
        "encoder.norm",
        "upsampler",
        "decoder.backbone.embed",
        "decoder.backbone.norm",
    ):
        keys |= {tok + f"{part}.{k}" for k in ("weight", "bias")}
    for n in range(decoder_depth):
        block = tok + f"decoder.backbone.convnext.{n}."
        keys |= {
            block + f"{p}.{k}" for p in ("dwconv", "norm", "pwconv1", "pwconv2") for k in ("weight", "bias")
        }
        keys.add(block + "gamma")
    keys |= {tok + f"decoder.backbone.final_layer_norm.{k}" for k in ("weight", "bias")}
    keys |= {
        tok + "decoder.head.out.weight",
        tok + "decoder.head.out.bias",
        tok + "decoder.head.istft.window",
    }
    keys |= {f"{fc}.{k}" for fc in ("fc_a", "fc_mu", "fc_logvar") for k in ("weight", "bias")}
    return keys


def _trained_like(seed: int) -> LoSATok:
    torch.manual_seed(seed)
    model = LoSATok(tiny()).eval()
    with torch.no_grad():  # make BatchNorm statistics non-trivial so they must load too
        bn = model.semantic_encoder.encoder.init_bn[1]
        bn.running_mean.uniform_(-50, -20)
        bn.running_var.uniform_(50, 200)
    return model


def test_our_state_dict_uses_exactly_the_published_key_names():
    cfg = tiny()
    assert set(LoSATok(cfg).state_dict()) == published_keys(cfg.semantic_depth, cfg.decoder_depth)


@pytest.mark.parametrize("wrapped", [True, False])
def test_published_whole_model_file_loads_strictly_and_reproduces_outputs(tmp_path, wrapped):
    source = _trained_like(1)
    state = source.state_dict()
    torch.save({"state_dict": state} if wrapped else state, tmp_path / "losatok_kl1e-3.pth")
    loaded = load_published(tmp_path / "losatok_kl1e-3.pth", tiny())
    wav = torch.randn(16_000) * 0.1
    a, b = source.encode(wav), loaded.encode(wav)
    assert torch.equal(a.z, b.z) and torch.equal(a.semantic_high, b.semantic_high)
    assert torch.equal(source.decode(a.z), loaded.decode(b.z))
    assert all(not p.requires_grad for p in loaded.semantic_encoder.parameters())


def test_published_semantic_encoder_file_loads_into_the_encoder(tmp_path):
    source = _trained_like(1)
    sem_state = {k: v for k, v in source.semantic_encoder.state_dict().items()}
    assert {k.split(".")[0] for k in sem_state} == {"encoder", "bottleneck"}
    torch.save({"state_dict": sem_state}, tmp_path / "semantic_encoder.pth")
    target = _trained_like(2)
    report = load_semantic_encoder(target, tmp_path / "semantic_encoder.pth")
    assert report.ok
    wav = torch.randn(16_000) * 0.1
    assert torch.equal(source.encode(wav).semantic_low, target.encode(wav).semantic_low)


def test_wrong_missing_and_misshapen_keys_are_named(tmp_path):
    state = _trained_like(1).state_dict()
    renamed = dict(state)
    renamed["fc_mu.weights"] = renamed.pop("fc_mu.weight")
    torch.save({"state_dict": renamed}, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError, match=r"missing key\(s\): fc_mu\.weight") as err:
        load_published(tmp_path / "renamed.pth", tiny())
    assert "unexpected key(s): fc_mu.weights" in str(err.value)

    missing = dict(state)
    del missing["dasheng_tokenizer.decoder.head.istft.window"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="dasheng_tokenizer.decoder.head.istft.window"):
        load_published(tmp_path / "missing.pth", tiny())

    wrong_shape = dict(state)
    wrong_shape["fc_a.bias"] = torch.zeros(3)
    torch.save(wrong_shape, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"fc_a\.bias: checkpoint \(3,\) vs model"):
        load_published(tmp_path / "shape.pth", tiny())


def test_non_strict_load_reports_instead_of_raising(tmp_path):
    state = _trained_like(1).state_dict()
    state["extra.thing"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pth")
    from losatok.checkpoint import load_into, read_state_dict

    report = load_into(LoSATok(tiny()), read_state_dict(tmp_path / "extra.pth"), strict=False)
    assert report.unexpected == ["extra.thing"] and not report.missing


def test_key_map_translates_a_different_layout(tmp_path):
    source = _trained_like(1)
    ddp_style = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save(ddp_style, tmp_path / "ddp.pth")
    with pytest.raises(CheckpointError, match=r"try key_map=\{'module\.': ''\}"):
        load_published(tmp_path / "ddp.pth", tiny())
    loaded = load_published(tmp_path / "ddp.pth", tiny(), key_map={"module.": ""})
    wav = torch.randn(8000)
    assert torch.equal(source.encode(wav).z, loaded.encode(wav).z)


def test_our_checkpoint_alone_rebuilds_its_model(tmp_path):
    source = _trained_like(5)
    save_checkpoint(source, tmp_path / "ckpt" / "model.pt", extra={"step": 10})
    loaded = load_checkpoint(tmp_path / "ckpt" / "model.pt")
    assert loaded.config == tiny()
    wav = torch.randn(8000)
    assert torch.equal(source.encode(wav).z, loaded.encode(wav).z)
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["model.pt"]  # no temporary left behind
    # load_model recognises both kinds of file
    assert torch.equal(load_model(tmp_path / "ckpt" / "model.pt").encode(wav).z, source.encode(wav).z)


def test_pickled_code_is_never_executed(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "evil.pth", "wb") as handle:
        pickle.dump({"state_dict": Payload()}, handle)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_published(tmp_path / "evil.pth", tiny())


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pth does not exist"):
        load_model(tmp_path / "nope.pth", tiny())
