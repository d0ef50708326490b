import pytest
import torch

from losatok.losses import kl_loss, semantic_supervision_loss, sembo_loss, time_relation_loss


def _orthonormal(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)))
    return q  # (rows, cols) with orthonormal columns


def test_relation_loss_is_zero_when_every_cosine_is_preserved():
    low = torch.randn(2, 30, 16)
    high = low @ _orthonormal(64, 16).T  # an isometric embedding of low into 64 dims
    assert time_relation_loss(low, high).item() == pytest.approx(0.0, abs=1e-10)
    assert time_relation_loss(low * 3.0, high).item() == pytest.approx(0.0, abs=1e-10)  # cosines ignore scale


def test_relation_loss_is_positive_when_structure_is_lost():
    low = torch.randn(2, 30, 16)
    high = low @ _orthonormal(64, 16).T
    assert time_relation_loss(torch.randn(2, 30, 16), high) > 1e-3
    scrambled = low[:, torch.randperm(30)]
    assert time_relation_loss(scrambled, high) > 1e-3


def test_relation_loss_ignores_padded_frames():
    low = torch.randn(1, 20, 8)
    high = low @ _orthonormal(32, 8).T
    noisy_low = low.clone()
    noisy_low[:, 12:] = torch.randn(1, 8, 8)  # garbage only on padding
    mask = torch.arange(20)[None] < 12
    assert time_relation_loss(noisy_low, high, mask).item() == pytest.approx(0.0, abs=1e-10)
    assert time_relation_loss(noisy_low, high) > 1e-3


def test_relation_loss_does_not_push_gradients_into_the_high_side():
    low = torch.randn(1, 10, 4, requires_grad=True)
    high = torch.randn(1, 10, 16, requires_grad=True)
    time_relation_loss(low, high).backward()
    assert high.grad is None and low.grad.abs().sum() > 0


def test_sembo_loss_terms():
    high = torch.randn(2, 10, 32)
    low = torch.randn(2, 10, 8)
    perfect = sembo_loss(high, high * 2.0, low)  # a scaled reconstruction is perfect after l2norm
    assert perfect["reconstruction"].item() == pytest.approx(0.0, abs=1e-12)
    bad = sembo_loss(high, torch.randn(2, 10, 32), low)
    assert bad["reconstruction"] > 0
    torch.testing.assert_close(bad["total"], bad["reconstruction"] + bad["relation"])


def test_kl_without_floor_matches_the_closed_form():
    mu, logvar = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    expected = (0.5 * (mu**2 + logvar.exp() - 1 - logvar)).sum(-1).mean()
    torch.testing.assert_close(kl_loss(mu, logvar), expected)
    assert kl_loss(torch.zeros(1, 3, 4), torch.zeros(1, 3, 4)).item() == 0.0


def test_kl_floor_raises_small_dims_and_cuts_their_gradient():
    mu = torch.zeros(1, 1, 4)
    mu[..., 0] = 3.0  # one dim far above the floor (KL 4.5), three at exactly 0
    mu.requires_grad_(True)
    logvar = torch.zeros(1, 1, 4)
    value = kl_loss(mu, logvar, floor=1e-2)
    assert value.item() == pytest.approx(4.5 + 3 * 1e-2)
    value.backward()
    assert mu.grad[..., 0].item() == pytest.approx(3.0) and mu.grad[..., 1:].abs().sum() == 0
    assert kl_loss(mu, logvar, floor=10.0).item() == pytest.approx(40.0)  # every dim floored


def test_kl_mask_averages_over_valid_frames():
    mu = torch.zeros(1, 4, 2)
    mu[0, 3] = 100.0  # huge KL on a padded frame
    mask = torch.tensor([[True, True, True, False]])
    assert kl_loss(mu, torch.zeros_like(mu), mask=mask).item() == 0.0


@pytest.mark.parametrize("mode", ["both", "high_only", "low_only"])
def test_semantic_supervision_modes(mode):
    ah, sh = torch.randn(2, 6, 32, requires_grad=True), torch.randn(2, 6, 32, requires_grad=True)
    al, sl = torch.randn(2, 6, 8, requires_grad=True), torch.randn(2, 6, 8, requires_grad=True)
    out = semantic_supervision_loss(ah, sh, al, sl, mode=mode)
    out["total"].backward()
    assert sh.grad is None and sl.grad is None  # targets are detached
    assert (ah.grad is not None) == (mode != "low_only")
    assert (al.grad is not None) == (mode != "high_only")
    expected = {"both": out["high"] + out["low"], "high_only": out["high"], "low_only": out["low"]}[mode]
    torch.testing.assert_close(out["total"], expected)


def test_unknown_supervision_mode_is_refused():
    x = torch.zeros(1, 1, 2)
    with pytest.raises(ValueError, match="low_only"):
        semantic_supervision_loss(x, x, x, x, mode="middle")
