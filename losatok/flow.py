"""Rectified flow (flow matching) for the DiT: training objective and ODE samplers.

Convention: x0 ~ N(0, I) is noise, x1 is data, x_t = (1 - t) x0 + t x1 and the target
velocity is v = dx_t/dt = x1 - x0; t = 0 is pure noise, t = 1 is data. Sampling integrates
dx/dt = v(x, t) from t = 0 to t = 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from losatok.dit import DiT

TIME_EPS = 1e-5  # keeps sampled times strictly inside (0, 1)


def sample_time(
    batch: int,
    distribution: str = "logit_normal",
    generator: torch.Generator | None = None,
    mean: float = 0.0,
    std: float = 1.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(B,) training times in (0, 1).

    "logit_normal": t = sigmoid(mean + std * n), n ~ N(0, 1), which puts more steps at mid
    times where the velocity is hardest to predict (SD3); "uniform": t ~ U(0, 1). Drawn on the
    generator's device (CPU without one) and moved to `device`.
    """
    draw_on = generator.device if generator is not None else torch.device("cpu")
    if distribution == "logit_normal":
        t = torch.sigmoid(mean + std * torch.randn(batch, generator=generator, device=draw_on))
    elif distribution == "uniform":
        t = torch.rand(batch, generator=generator, device=draw_on)
    else:
        raise ValueError(f"unknown time distribution {distribution!r}; use 'logit_normal' or 'uniform'")
    return t.clamp(TIME_EPS, 1 - TIME_EPS).to(device or draw_on)


def _noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, I) of x's shape, drawn on the generator's device (x's without one), float32, on x's device."""
    draw_on = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=draw_on).to(x.device)


def _valid_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (B, T) values over True entries of the (B, T) mask; zero when none is valid."""
    total = torch.where(mask, values, 0.0).sum()
    return total / mask.sum().clamp(min=1)


def flow_matching_loss(
    model: DiT,
    x1: torch.Tensor,
    mask: torch.Tensor,
    text_ids: torch.Tensor,
    text_mask: torch.Tensor,
    drop_text: torch.Tensor | None = None,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    semantic_target: torch.Tensor | None = None,
    semantic_weight: float = 0.0,
    time_distribution: str = "logit_normal",
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Flow-matching loss of one batch, with optional semantic alignment.

    Args:
        x1: (B, T, C) data latents; mask (B, T) bool valid frames (padded values may be anything).
        text_ids, text_mask, drop_text: text condition, as for `DiT.forward`.
        t: (B,) times; drawn from `time_distribution` when None. noise: (B, T, C) x0; drawn when None.
        semantic_target: (B, T, semantic_dim) features the model's `semantic` output aligns with.
        semantic_weight: weight of the semantic term in the total.
    Returns:
        float32 scalars:
        "flow" = sum over valid (b, t) and channels c of (v_pred - (x1 - x0))^2 / (valid frames x C),
            with v_pred = model(x_t, t), x_t = (1 - t) x0 + t x1; every valid frame weighs the same;
        "semantic" = mean over valid frames of 1 - cos(model semantic, semantic_target)
            (zero when no target is given or the model has no semantic head);
        "loss" = flow + semantic_weight x semantic.
    """
    valid = mask.bool()
    batch = x1.shape[0]
    if t is None:
        t = sample_time(batch, time_distribution, generator, device=x1.device)
    if noise is None:
        noise = _noise_like(x1, generator)
    x1, noise = torch.where(valid[..., None], x1, 0.0), torch.where(valid[..., None], noise, 0.0)
    t_ = t.to(x1.dtype)[:, None, None]  # (B, 1, 1)
    x_t = (1 - t_) * noise + t_ * x1  # (B, T, C)
    target = x1 - noise  # (B, T, C)

    output = model(x_t, t, valid, text_ids, text_mask, drop_text)
    squared = (output.velocity.float() - target.float()).pow(2).mean(dim=-1)  # (B, T)
    flow = _valid_mean(squared, valid)

    semantic = torch.zeros((), device=x1.device)
    if semantic_weight > 0 and (semantic_target is None or output.semantic is None):
        raise ValueError(
            "semantic_weight > 0 needs a semantic_target and a model with semantic_align_layer set"
        )
    if semantic_target is not None and output.semantic is not None:
        target_features = torch.where(valid[..., None], semantic_target, 0.0).float()
        cosine = F.cosine_similarity(output.semantic.float(), target_features, dim=-1, eps=1e-8)  # (B, T)
        semantic = _valid_mean(1 - cosine, valid)
    return {"loss": flow + semantic_weight * semantic, "flow": flow, "semantic": semantic}


@torch.no_grad()
def sample(
    model: DiT,
    shape: tuple[int, int, int] | torch.Size | torch.Tensor,
    mask: torch.Tensor,
    text_ids: torch.Tensor,
    text_mask: torch.Tensor,
    steps: int = 32,
    method: str = "euler",
    cfg_scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Integrate dx/dt = v(x, t) from noise at t = 0 to data at t = 1 on a uniform grid.

    Args:
        shape: (B, T, C) of the output, noise drawn with `generator`; or a (B, T, C) tensor
            used as the starting noise x0 itself.
        mask: (B, T) bool valid frames; text_ids, text_mask: (B, L) from `encode_texts`.
        steps: ODE steps; "euler" costs one model pass per step, "midpoint" two.
        cfg_scale: classifier-free guidance, v = v_uncond + cfg_scale (v_cond - v_uncond), the
            unconditional pass dropping every row's text; 1 runs the conditional pass only.
    Returns:
        (B, T, C) float32 latents, zero at padded frames.
    """
    if method not in ("euler", "midpoint"):
        raise ValueError(f"unknown method {method!r}; use 'euler' or 'midpoint'")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    device = next(model.parameters()).device
    if isinstance(shape, torch.Tensor):
        x = shape.to(device=device, dtype=torch.float32)
    else:
        draw_on = generator.device if generator is not None else device
        x = torch.randn(tuple(shape), generator=generator, device=draw_on).to(device)
    valid = mask.bool().to(device)
    text_ids, text_mask = text_ids.to(device), text_mask.to(device)
    batch = x.shape[0]
    guided = cfg_scale != 1.0
    if guided:  # conditional and unconditional rows in one batch
        drop = torch.cat([torch.zeros(batch, dtype=torch.bool), torch.ones(batch, dtype=torch.bool)]).to(
            device
        )
        ids2, text_mask2, valid2 = text_ids.repeat(2, 1), text_mask.repeat(2, 1), valid.repeat(2, 1)

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        if not guided:
            time = torch.full((batch,), t, device=device)
            return model(x, time, valid, text_ids, text_mask).velocity.float()
        time = torch.full((2 * batch,), t, device=device)
        both = model(x.repeat(2, 1, 1), time, valid2, ids2, text_mask2, drop).velocity.float()
        cond, uncond = both[:batch], both[batch:]
        return uncond + cfg_scale * (cond - uncond)

    dt = 1.0 / steps
    for step in range(steps):
        t = step * dt
        if method == "euler":
            x = x + dt * velocity(x, t)
        else:
            half = x + 0.5 * dt * velocity(x, t)
            x = x + dt * velocity(half, t + 0.5 * dt)
    return torch.where(valid[..., None], x, 0.0)
