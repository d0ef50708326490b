import pytest
import torch

from losatok import LoSATok, collate_waveforms, official, tiny


@pytest.mark.parametrize("seconds", [1, 3, 12])
def test_n_seconds_give_25n_frames(tiny_model, seconds):
    cfg = tiny_model.config
    result = tiny_model.encode(torch.randn(16_000 * seconds) * 0.1)
    assert result.frames.tolist() == [25 * seconds]
    assert result.z.shape == (1, 25 * seconds, cfg.latent_dim)
    assert result.semantic_high.shape == (1, 25 * seconds, cfg.semantic_dim)
    assert result.semantic_low.shape == result.logvar.shape == result.mu.shape == result.z.shape
    audio = tiny_model.decode(result.z)
    assert audio.shape == (1, 25 * seconds * 640)


def test_inference_uses_the_posterior_mean_unless_asked_to_sample(tiny_model):
    wav = torch.randn(16_000) * 0.1
    mean = tiny_model.encode(wav)
    assert torch.equal(mean.z, mean.mu)
    drawn = tiny_model.encode(wav, sample=True, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(drawn.z, drawn.mu)
    assert (drawn.logvar.abs() <= 20).all()


def test_batch_invariance_on_valid_frames(tiny_model):
    """Each item of a padded batch equals itself encoded alone, including one past the 10.08 s chunk."""
    torch.manual_seed(3)
    lengths = [16_000, 16_000 * 2 + 321, 16_000 * 11 + 77, 900]
    waves = [torch.randn(n) * 0.2 for n in lengths]
    batch, lens = collate_waveforms(waves)
    together = tiny_model.encode(batch, lens)
    for index, wave in enumerate(waves):
        alone = tiny_model.encode(wave)
        assert together.frames[index] == alone.frames[0]
        for name, value in alone.item(0).items():
            torch.testing.assert_close(together.item(index)[name], value, atol=1e-4, rtol=1e-4, msg=name)


def test_decode_batch_invariance_on_valid_samples(tiny_model):
    """Each latent of a padded batch decodes to the waveform it gives alone, to its last sample."""
    torch.manual_seed(4)
    frames = [25, 51, 277, 3, 1]
    latents = [torch.randn(n, tiny_model.config.latent_dim) for n in frames]
    batch = torch.nn.utils.rnn.pad_sequence(latents, batch_first=True)  # (B, T, C), zero padding
    together = tiny_model.decode(batch, torch.tensor(frames))
    for index, z in enumerate(latents):
        alone = tiny_model.decode(z)[0]
        assert alone.shape == (frames[index] * 640,)
        torch.testing.assert_close(together[index, : alone.numel()], alone, atol=1e-5, rtol=1e-4)
        assert together[index, alone.numel() :].abs().sum() == 0


def test_decode_of_a_batch_is_independent_of_what_pads_it(tiny_model):
    """Garbage in the padding frames (as a DiT leaves there) changes nothing on the valid samples."""
    torch.manual_seed(6)
    z = torch.randn(2, 40, tiny_model.config.latent_dim)
    frames = torch.tensor([40, 17])
    noisy = z.clone()
    noisy[1, 17:] = torch.randn(23, tiny_model.config.latent_dim) * 100
    torch.testing.assert_close(tiny_model.decode(noisy, frames), tiny_model.decode(z, frames))


def test_order_within_a_batch_does_not_matter(tiny_model):
    waves = [torch.randn(n) * 0.2 for n in (8000, 24_000, 16_000)]
    forward = tiny_model.encode(*collate_waveforms(waves))
    backward = tiny_model.encode(*collate_waveforms(waves[::-1]))
    for i in range(3):
        torch.testing.assert_close(forward.item(i)["z"], backward.item(2 - i)["z"], atol=1e-4, rtol=1e-4)


def test_too_short_and_non_finite_inputs_are_refused(tiny_model):
    with pytest.raises(ValueError, match=r"items \[1\] are shorter"):
        tiny_model.encode(*collate_waveforms([torch.randn(16_000), torch.randn(100)]))
    bad = torch.randn(16_000)
    bad[5] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        tiny_model.encode(bad)


def test_decode_rejects_wrong_latent_dim_and_zeroes_padding(tiny_model):
    with pytest.raises(ValueError, match="latent_dim"):
        tiny_model.decode(torch.randn(1, 10, tiny_model.config.latent_dim + 1))
    audio = tiny_model.decode(torch.randn(2, 10, tiny_model.config.latent_dim), frames=torch.tensor([10, 4]))
    assert audio.shape == (2, 6400)
    assert audio[1, 4 * 640 :].abs().max() == 0 and audio[1, : 4 * 640].abs().max() > 0


def test_frozen_parts_get_no_gradient_and_trained_parts_do(tiny_model):
    from losatok.losses import kl_loss, semantic_supervision_loss

    model = tiny_model.train()
    assert not model.semantic_encoder.training  # BatchNorm statistics stay fixed
    wav, lengths = collate_waveforms([torch.randn(16_000) * 0.1, torch.randn(12_000) * 0.1])
    f = model.features(wav, lengths)
    z = model.sample_posterior(f.mu, f.logvar)
    audio = model.dasheng_tokenizer.decode(z)
    sup = semantic_supervision_loss(
        f.acoustic_high, f.semantic_high, f.acoustic_low, f.semantic_low, mask=f.mask
    )
    loss = audio.square().mean() + sup["total"] + kl_loss(f.mu, f.logvar, 1e-3, f.mask)
    loss.backward()
    for name, p in model.semantic_encoder.named_parameters():
        assert p.grad is None, f"frozen {name} received a gradient"
    trained = [model.fc_a, model.fc_mu, model.fc_logvar, model.dasheng_tokenizer]
    for part in trained:
        for name, p in part.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"trainable {name} got no gradient"


def _expected_official_params() -> dict[str, int]:
    """Parameter counts derived by hand from the published architecture (DESIGN.md 1.2)."""
    d, hid, low = 1280, 5120, 128
    block = 2 * (2 * d) + (d * 3 * d + 3 * d) + (d * d + d) + (d * hid + hid) + (hid * d + d)
    # BatchNorm affine, 32 blocks, patch conv, time and freq positions, final norm
    encoder = 2 * 64 + 32 * block + (d * 64 * 4 + d) + d * 252 + d + 2 * d
    sembo = (d * 512 + 512) + (512 * low + low) + (low * 512 + 512) + (512 * d + d)
    acoustic = (d * 128 * 4 + d) + 2 * d
    convnext = (d * 7 + d) + 2 * d + (d * hid + hid) + (hid * d + d) + d
    decoder = (d * d * 7 + d) + 2 * d + 12 * convnext + 2 * d + (d * 1282 + 1282)
    return {
        "semantic_encoder.encoder": encoder,
        "semantic_encoder.bottleneck": sembo,
        "dasheng_tokenizer.encoder": acoustic,
        "dasheng_tokenizer.upsampler": low * d * 2 + d,
        "dasheng_tokenizer.decoder": decoder,
        "fc": (d * low + low) + 2 * (low * low + low),
    }


def test_official_parameter_counts_match_the_published_architecture():
    with torch.device("meta"):
        model = LoSATok(official())
    expected = _expected_official_params()
    for prefix, count in expected.items():
        got = sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))
        assert got == count, f"{prefix}: {got} parameters, published architecture has {count}"
    assert sum(p.numel() for p in model.parameters()) == sum(expected.values())
    assert 625e6 < expected["semantic_encoder.encoder"] < 635e6  # "about 630 M"


@pytest.mark.slow
def test_official_preset_shapes_on_real_weights():
    torch.manual_seed(0)
    model = LoSATok(official()).eval()
    result = model.encode(torch.randn(2 * 16_000) * 0.1)
    assert result.z.shape == (1, 50, 128) and result.semantic_high.shape == (1, 50, 1280)
    assert model.decode(result.z).shape == (1, 50 * 640)


def test_tiny_model_is_small():
    model = LoSATok(tiny())
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    assert size < 4 * 2**20
