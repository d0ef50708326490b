import dataclasses

import pytest
import torch
from torch import nn

from losatok.dit import DIT_PRESETS, DiT, DiTConfig, DiTOutput, dit_preset, dit_tiny
from losatok.flow import flow_matching_loss, sample, sample_time
from losatok.text import ByteTextEncoder, TextEncoder, TextEncoderConfig, encode_texts

TEXTS = ["a dog barks twice", "hello"]


def frame_mask(lengths: list[int], time: int) -> torch.Tensor:
    return torch.arange(time)[None, :] < torch.tensor(lengths)[:, None]


def make_model(seed: int = 0, randomize: bool = True, **overrides) -> DiT:
    """Tiny DiT; `randomize` refills the zero-initialised layers so every path carries signal."""
    torch.manual_seed(seed)
    model = DiT(dataclasses.replace(dit_tiny(), **overrides)).eval()
    if randomize:
        with torch.no_grad():
            for p in model.parameters():
                if not p.any():
                    p.normal_(std=0.2)
    return model


def run(model, x, mask, texts, t=0.5, drop=None):
    ids, text_mask = encode_texts(texts, model.config.text_max_len)
    return model(x, torch.full((x.shape[0],), t), mask, ids, text_mask, drop)


# --- text ----------------------------------------------------------------------------------------
def test_encode_texts_bytes_padding_truncation_and_empty():
    ids, mask = encode_texts(["hé", "", "abcdef"], max_len=4)
    assert ids.dtype == torch.long and mask.dtype == torch.bool
    assert ids.tolist() == [
        [ord("h") + 1, 0xC3 + 1, 0xA9 + 1, 0],  # é is two UTF-8 bytes
        [0, 0, 0, 0],
        [ord("a") + 1, ord("b") + 1, ord("c") + 1, ord("d") + 1],  # cut at max_len
    ]
    assert mask.tolist() == [[True, True, True, False], [False] * 4, [True] * 4]
    ids, mask = encode_texts([""], max_len=8)
    assert ids.shape == (1, 1) and not mask.any()


def test_byte_text_encoder_is_finite_on_padding_and_batch_invariant():
    torch.manual_seed(0)
    encoder = ByteTextEncoder(TextEncoderConfig(dim=32, depth=2, heads=4, max_len=16)).eval()
    ids, mask = encode_texts(["", "short", "a longer one"], 16)
    out = encoder(ids, mask)
    assert out.shape == (3, 12, 32) and torch.isfinite(out).all()
    alone_ids, alone_mask = encode_texts(["short"], 16)
    torch.testing.assert_close(out[1, :5], encoder(alone_ids, alone_mask)[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="max_len"):
        encoder(*encode_texts(["x" * 20], 20))


# --- config --------------------------------------------------------------------------------------
def test_config_round_trip_presets_and_validation():
    for name in DIT_PRESETS:
        config = dit_preset(name)
        assert DiTConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown DiT config keys"):
        DiTConfig.from_dict({**dit_tiny().to_dict(), "detph": 3})
    with pytest.raises(ValueError, match="known presets"):
        dit_preset("huge")
    with pytest.raises(ValueError, match="together"):
        dataclasses.replace(dit_tiny(), semantic_align_layer=0)
    with pytest.raises(ValueError, match="not a block"):
        dataclasses.replace(dit_tiny(), semantic_align_layer=2, semantic_dim=8)
    with pytest.raises(ValueError, match="even width"):
        dataclasses.replace(dit_tiny(), dim=60, heads=4)  # 15-dim heads


# --- model ---------------------------------------------------------------------------------------
def test_output_shapes_and_zero_velocity_at_init():
    torch.manual_seed(0)
    model = DiT(dataclasses.replace(dit_tiny(), semantic_align_layer=0, semantic_dim=8))
    x = torch.randn(2, 10, 16)
    out = run(model, x, frame_mask([10, 6], 10), TEXTS, t=0.3)
    assert isinstance(out, DiTOutput)
    assert out.velocity.shape == (2, 10, 16) and out.semantic.shape == (2, 10, 8)
    assert torch.equal(out.velocity, torch.zeros_like(out.velocity))  # adaLN-zero + zero final layer
    assert out.semantic[0].abs().sum() > 0 and not out.semantic[1, 6:].any()
    assert run(make_model(), x, frame_mask([10, 6], 10), TEXTS).semantic is None


def test_padded_frames_do_not_influence_valid_frames():
    model = make_model()
    x = torch.randn(2, 12, 16)
    mask = frame_mask([12, 7], 12)
    out = run(model, x, mask, TEXTS).velocity
    changed = x.clone()
    changed[1, 7:] = torch.randn(5, 16) * 1e4
    out_changed = run(model, changed, mask, TEXTS).velocity
    assert torch.isfinite(out_changed).all()
    torch.testing.assert_close(out_changed[1, :7], out[1, :7], atol=1e-5, rtol=1e-5)
    assert not out_changed[1, 7:].any()


def test_batched_items_equal_each_item_alone():
    model = make_model()
    x = torch.randn(2, 12, 16)
    mask = frame_mask([12, 7], 12)
    ids, text_mask = encode_texts(TEXTS, 256)
    t = torch.tensor([0.2, 0.8])
    batched = model(x, t, mask, ids, text_mask).velocity
    assert batched.abs().mean() > 1e-2
    for b, n in enumerate([12, 7]):
        one_ids, one_mask = encode_texts([TEXTS[b]], 256)
        alone = model(x[b : b + 1, :n], t[b : b + 1], torch.ones(1, n, dtype=torch.bool), one_ids, one_mask)
        torch.testing.assert_close(batched[b, :n], alone.velocity[0], atol=1e-5, rtol=1e-5)


def test_rotary_positions_make_the_model_position_aware():
    model = make_model()
    x = torch.randn(1, 16, 16)
    mask = torch.ones(1, 16, dtype=torch.bool)
    out = run(model, x, mask, TEXTS[:1]).velocity
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    permuted = run(model, x[:, perm], mask, TEXTS[:1]).velocity
    rolled = run(model, x.roll(3, dims=1), mask, TEXTS[:1]).velocity
    # a position-blind transformer is permutation-equivariant: these would agree to ~1e-7 of the
    # output; the per-frame residual path dominates the output, so position shows as a few percent
    scale = out.abs().mean()
    assert (permuted - out[:, perm]).abs().mean() > 5e-3 * scale
    assert (rolled - out.roll(3, dims=1)).abs().mean() > 5e-3 * scale


def test_text_changes_the_output_and_dropped_text_equals_empty_text():
    model = make_model()
    x = torch.randn(2, 8, 16)
    mask = torch.ones(2, 8, dtype=torch.bool)
    first = run(model, x, mask, ["a dog barks twice"] * 2).velocity
    second = run(model, x, mask, ["rain on a tin roof"] * 2).velocity
    assert (first - second).abs().mean() > 0.01 * first.abs().mean()

    dropped = run(model, x, mask, TEXTS, drop=torch.tensor([True, False])).velocity
    empty = run(model, x[:1], mask[:1], [""]).velocity
    torch.testing.assert_close(dropped[:1], empty, atol=1e-5, rtol=1e-5)
    kept = run(model, x[1:], mask[1:], TEXTS[1:]).velocity
    torch.testing.assert_close(dropped[1:], kept, atol=1e-5, rtol=1e-5)
    assert (empty - kept).abs().mean() > 0.01 * kept.abs().mean()


def test_a_plugged_in_text_encoder_sets_the_context_width():
    class BagOfBytes(TextEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.dim = 24
            self.embed = nn.Embedding(257, 24)

        def forward(self, ids, mask):
            return self.embed(ids)  # (B, L, 24)

    torch.manual_seed(0)
    encoder = BagOfBytes()
    before = encoder.embed.weight.clone()
    model = DiT(dit_tiny(), text_encoder=encoder)
    assert model.text_encoder is encoder and torch.equal(encoder.embed.weight, before)  # not re-initialised
    out = run(model, torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool), TEXTS)
    assert out.velocity.shape == (2, 5, 16)


# --- flow matching -------------------------------------------------------------------------------
class Recorder(nn.Module):
    """Fake model: records its inputs, predicts a fixed velocity and semantic output."""

    def __init__(self, velocity: torch.Tensor, semantic: torch.Tensor | None = None) -> None:
        super().__init__()
        self.velocity, self.semantic = velocity, semantic
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, x, t, mask, ids, text_mask, drop=None):
        self.x, self.t = x, t
        return DiTOutput(self.velocity, self.semantic)


def test_sample_time_is_inside_the_unit_interval():
    for distribution in ("logit_normal", "uniform"):
        t = sample_time(10_000, distribution, torch.Generator().manual_seed(0))
        assert t.shape == (10_000,) and (t > 0).all() and (t < 1).all()
        assert abs(float(t.mean()) - 0.5) < 0.02
    logit = sample_time(10_000, "logit_normal", torch.Generator().manual_seed(0))
    assert float((logit - 0.5).abs().mean()) < 0.2  # concentrated at mid times, unlike uniform's 0.25
    with pytest.raises(ValueError, match="unknown time distribution"):
        sample_time(2, "beta")


def test_flow_loss_matches_a_hand_computation():
    x1 = torch.full((1, 2, 3), 2.0)
    noise = torch.full((1, 2, 3), -1.0)
    fake = Recorder(velocity=torch.ones(1, 2, 3))
    ids, text_mask = encode_texts(["x"], 8)
    losses = flow_matching_loss(
        fake, x1, torch.ones(1, 2, dtype=torch.bool), ids, text_mask, t=torch.tensor([0.25]), noise=noise
    )
    torch.testing.assert_close(fake.x, torch.full((1, 2, 3), 0.75 * -1.0 + 0.25 * 2.0))
    # target x1 - x0 = 3, prediction 1: squared error 4 everywhere
    torch.testing.assert_close(losses["flow"], torch.tensor(4.0))
    torch.testing.assert_close(losses["loss"], torch.tensor(4.0))
    assert losses["semantic"].item() == 0.0


def test_padded_frames_do_not_contribute_to_the_loss():
    model = make_model()
    x1 = torch.randn(2, 10, 16)
    mask = frame_mask([10, 4], 10)
    ids, text_mask = encode_texts(TEXTS, 256)
    kwargs = dict(t=torch.tensor([0.3, 0.6]), noise=torch.randn(2, 10, 16))
    base = flow_matching_loss(model, x1, mask, ids, text_mask, **kwargs)
    huge = x1.clone()
    huge[1, 4:] = 1e6
    kwargs["noise"] = kwargs["noise"].clone()
    kwargs["noise"][1, 4:] = -1e6
    changed = flow_matching_loss(model, huge, mask, ids, text_mask, **kwargs)
    assert base["flow"] > 0
    torch.testing.assert_close(changed["flow"], base["flow"], atol=1e-6, rtol=1e-6)
    # every valid frame weighs the same: a mean over the 14 valid frames, not the 20 in the batch
    t, noise = kwargs["t"][:, None, None], kwargs["noise"]
    velocity = model((1 - t) * noise + t * x1, kwargs["t"], mask, ids, text_mask).velocity
    expected = (velocity - (x1 - noise)).pow(2).mean(-1)[mask].mean()
    torch.testing.assert_close(base["flow"], expected, atol=1e-6, rtol=1e-6)


def test_semantic_loss_is_zero_when_the_head_points_at_the_target():
    model = make_model(semantic_align_layer=1, semantic_dim=8)
    x1 = torch.randn(2, 6, 16)
    mask = frame_mask([6, 3], 6)
    ids, text_mask = encode_texts(TEXTS, 256)
    t, noise = torch.tensor([0.4, 0.7]), torch.randn(2, 6, 16)
    x_t = (1 - t[:, None, None]) * noise + t[:, None, None] * x1
    semantic = model(x_t * mask[..., None], t, mask, ids, text_mask).semantic
    target = 3.0 * semantic  # same direction, other norm
    target[1, 3:] = torch.randn(3, 8)  # padded frames are ignored
    aligned = flow_matching_loss(
        model, x1, mask, ids, text_mask, t=t, noise=noise, semantic_target=target, semantic_weight=0.5
    )
    assert aligned["semantic"].abs() < 1e-5
    torch.testing.assert_close(aligned["loss"], aligned["flow"] + 0.5 * aligned["semantic"])
    opposed = flow_matching_loss(
        model, x1, mask, ids, text_mask, t=t, noise=noise, semantic_target=-target, semantic_weight=0.5
    )
    torch.testing.assert_close(opposed["semantic"], torch.tensor(2.0), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="semantic_target"):
        flow_matching_loss(make_model(), x1, mask, ids, text_mask, semantic_weight=1.0)


class RampVelocity(nn.Module):
    """Fake model with v(x, t) = 2t: the exact flow from x0 ends at x0 + 1."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, x, t, mask, ids, text_mask, drop=None):
        return DiTOutput(2 * t[:, None, None].expand_as(x), None)


def test_midpoint_integrates_a_linear_in_time_velocity_exactly_and_euler_does_not():
    x0 = torch.randn(1, 3, 2)
    mask = torch.ones(1, 3, dtype=torch.bool)
    ids, text_mask = encode_texts(["x"], 8)
    midpoint = sample(RampVelocity(), x0, mask, ids, text_mask, steps=4, method="midpoint")
    euler = sample(RampVelocity(), x0, mask, ids, text_mask, steps=4, method="euler")
    torch.testing.assert_close(midpoint, x0 + 1)
    torch.testing.assert_close(euler, x0 + 1 - 1 / 4)  # left Riemann sum of 2t misses 1 / steps


# --- training and sampling -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def overfit():
    """A tiny DiT trained on one fixed batch whose channels have distinct means."""
    gen = torch.Generator().manual_seed(0)
    channel_mean = torch.randn(16, generator=gen) * 2
    x1 = channel_mean + 0.1 * torch.randn(4, 20, 16, generator=gen)  # (B, T, C)
    mask = frame_mask([20, 20, 15, 10], 20)
    ids, text_mask = encode_texts(["one", "two", "three", "four"], 256)
    torch.manual_seed(0)
    model = DiT(dit_tiny())
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        loss = flow_matching_loss(model, x1, mask, ids, text_mask, generator=gen)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model.eval(), x1, mask, ids, text_mask, channel_mean, losses


def test_a_tiny_dit_overfits_one_batch(overfit):
    *_, losses = overfit
    start = sum(losses[:10]) / 10
    end = sum(losses[-20:]) / 20
    assert end < 0.3 * start, (start, end)


def test_trained_samples_move_toward_the_data(overfit):
    model, x1, mask, ids, text_mask, channel_mean, _ = overfit
    noise = torch.randn(x1.shape, generator=torch.Generator().manual_seed(7))
    trained = sample(model, noise, mask, ids, text_mask, steps=16)
    torch.manual_seed(0)
    untrained = sample(DiT(dit_tiny()), noise, mask, ids, text_mask, steps=16)
    assert torch.isfinite(trained).all() and not trained[~mask].any()

    def channel_means(x):
        return (x * mask[..., None]).sum((0, 1)) / mask.sum()

    data = channel_means(x1)
    trained_error = (channel_means(trained) - data).abs().mean()
    untrained_error = (channel_means(untrained) - data).abs().mean()
    assert trained_error < 0.5 * untrained_error, (trained_error, untrained_error)


def test_sampler_methods_and_guidance(overfit):
    model, x1, mask, ids, text_mask, *_ = overfit
    noise = torch.randn(x1.shape, generator=torch.Generator().manual_seed(3))
    euler = sample(model, noise, mask, ids, text_mask, steps=8, method="euler")
    midpoint = sample(model, noise, mask, ids, text_mask, steps=8, method="midpoint")
    assert euler.shape == midpoint.shape == x1.shape
    assert torch.isfinite(midpoint).all() and not torch.equal(euler, midpoint)

    plain = sample(model, noise, mask, ids, text_mask, steps=8)
    torch.testing.assert_close(sample(model, noise, mask, ids, text_mask, steps=8, cfg_scale=1.0), plain)
    # cfg_scale 0 is the unconditional sample: the same as sampling with every text empty
    empty_ids, empty_mask = encode_texts([""] * 4, 256)
    unconditional = sample(model, noise, mask, empty_ids, empty_mask, steps=8)
    guided_zero = sample(model, noise, mask, ids, text_mask, steps=8, cfg_scale=0.0)
    torch.testing.assert_close(guided_zero, unconditional, atol=1e-4, rtol=1e-4)
    guided = sample(model, noise, mask, ids, text_mask, steps=8, cfg_scale=3.0)
    assert torch.isfinite(guided).all() and not torch.allclose(guided, plain)

    drawn = sample(
        model, (4, 20, 16), mask, ids, text_mask, steps=2, generator=torch.Generator().manual_seed(5)
    )
    again = sample(
        model, (4, 20, 16), mask, ids, text_mask, steps=2, generator=torch.Generator().manual_seed(5)
    )
    assert torch.equal(drawn, again)
    with pytest.raises(ValueError, match="method"):
        sample(model, noise, mask, ids, text_mask, method="rk4")
