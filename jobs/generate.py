"""`losatok-generate`: sample latents from a trained DiT and decode them to 16 kHz audio.

    losatok-generate --dit out/dit-tts/checkpoints --tokenizer ckpts/losatok_kl1e-3.pth \
        --text "Hello there." --text "A second sentence." --steps 32 --cfg 3 --out out/samples

Uses the EMA weights of the DiT's latest checkpoint, integrates the flow ODE (Euler or
midpoint) with classifier-free guidance, undoes the dataset normalisation stored in the
checkpoint, and decodes with the LoSATok tokenizer the dataset was made with.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import torch

from jobs import checkpointing
from jobs.train_dit import build_dit
from losatok import load_model, preset
from losatok.audio import save_audio
from losatok.dit import DiT, DiTConfig
from losatok.flow import sample
from losatok.text import encode_texts

CHARS_PER_SECOND = 14.0  # speaking rate of read English, for durations estimated from text


def estimate_seconds(text: str) -> float:
    """A TTS duration guess from the text length (at least one second)."""
    return max(1.0, len(text) / CHARS_PER_SECOND)


def load_dit(
    directory: str, use_ema: bool = True
) -> tuple[DiT, torch.Tensor | None, torch.Tensor | None, int]:
    """(model, latent mean, latent std, step) from the latest checkpoint under `directory`."""
    payload = checkpointing.load_latest(directory)
    if payload is None:
        raise FileNotFoundError(f"no DiT checkpoint under {directory}")
    text = payload.get("text_encoder") or {}
    model = build_dit(DiTConfig.from_dict(payload["dit_config"]), text.get("factory"), text.get("path"))
    if use_ema:  # AveragedModel keeps the averaged copy under "module."
        state = {k.removeprefix("module."): v for k, v in payload["ema"].items() if k.startswith("module.")}
    else:
        state = payload["model"]
    model.load_state_dict(state)
    return model.eval(), payload.get("latent_mean"), payload.get("latent_std"), payload["step"]


def generate(
    model: DiT,
    texts: list[str],
    frames: list[int],
    steps: int = 32,
    method: str = "midpoint",
    cfg_scale: float = 3.0,
    seed: int = 0,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents (B, T, C) in the tokenizer's space and their (B,) frame counts."""
    lengths = torch.tensor(frames)
    mask = torch.arange(int(lengths.max()))[None, :] < lengths[:, None]
    ids, text_mask = encode_texts(texts, model.config.text_max_len)
    shape = (len(texts), int(lengths.max()), model.config.latent_dim)
    generator = torch.Generator().manual_seed(seed)
    latents = sample(
        model,
        shape,
        mask,
        ids,
        text_mask,
        steps=steps,
        method=method,
        cfg_scale=cfg_scale,
        generator=generator,
    )
    if mean is not None and std is not None:
        latents = latents * std + mean
    return latents * mask[..., None], lengths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="losatok-generate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dit", required=True, help="the training run's checkpoints folder")
    p.add_argument(
        "--tokenizer", help="LoSATok checkpoint (ours or published); none: an untrained --preset model"
    )
    p.add_argument(
        "--preset", default="official", help="tokenizer config for a published or absent checkpoint"
    )
    p.add_argument(
        "--text", action="append", required=True, help="a transcript or caption; repeat for several"
    )
    p.add_argument(
        "--seconds", type=float, help="duration of every output; default: estimated from each text"
    )
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--method", choices=("euler", "midpoint"), default="midpoint")
    p.add_argument("--cfg", type=float, default=3.0, help="classifier-free guidance scale (1 = none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--out", default="out/samples")
    args = p.parse_args(argv)

    model, mean, std, step = load_dit(args.dit, use_ema=not args.no_ema)
    tokenizer = load_model(args.tokenizer, preset(args.preset))
    if tokenizer.config.latent_dim != model.config.latent_dim:
        print(
            f"error: the DiT makes {model.config.latent_dim}-dim latents, the tokenizer decodes {tokenizer.config.latent_dim}",
            file=sys.stderr,
        )
        return 2
    rate = tokenizer.config.frame_rate
    frames = [math.ceil((args.seconds or estimate_seconds(t)) * rate) for t in args.text]
    latents, lengths = generate(
        model, args.text, frames, args.steps, args.method, args.cfg, args.seed, mean, std
    )
    audio = tokenizer.decode(latents, lengths)
    os.makedirs(args.out, exist_ok=True)
    for index, (text, length) in enumerate(zip(args.text, lengths.tolist(), strict=True)):
        path = os.path.join(args.out, f"sample-{index:03d}.wav")
        save_audio(
            path, audio[index, : length * tokenizer.config.samples_per_token], tokenizer.config.sample_rate
        )
        print(f"{path}: {length / rate:.2f} s  <- {text!r} (DiT step {step})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
