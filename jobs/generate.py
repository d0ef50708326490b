r"""`losatok-generate`: sample latents from a trained DiT and decode them to 16 kHz audio.

    losatok-generate --dit out/dit-tiny --text "Hello there." --out out/samples
    losatok-generate --dit out/dit-tts --tokenizer ckpts/losatok_kl1e-3.pth \
        --text "Hello there." --text "A second sentence." --steps 32 --cfg 3 --out out/samples

Uses the EMA weights of the DiT's latest checkpoint (or of the checkpoint file given),
integrates the flow ODE (Euler or midpoint) with classifier-free guidance, undoes the dataset
normalisation stored in the checkpoint, and decodes with the LoSATok tokenizer the dataset was
made with: the DiT checkpoint records it (an untrained one with its seed, or a checkpoint file),
so no flag is needed; --tokenizer names the file when the record has no path. The same --seed
gives the same audio.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
from typing import Any

import torch

from jobs import checkpointing
from jobs.builders import build_dit
from jobs.tokenizer_ref import build_tokenizer, check_tokenizer, warn
from jobs.usage import (
    Parser,
    UsageError,
    check_output_dir,
    existing_path,
    fail,
    non_negative_float,
    positive_float,
    positive_int,
)
from losatok.audio import save_audio
from losatok.checkpoint import CheckpointError
from losatok.config import PRESETS
from losatok.dit import DiT, DiTConfig
from losatok.flow import sample
from losatok.text import encode_texts
from losatok_storage.filesystem import url_to_fs

CHARS_PER_SECOND = 14.0  # speaking rate of read English, for durations estimated from text


def estimate_seconds(text: str) -> float:
    """A TTS duration guess from the text length (at least one second)."""
    return max(1.0, len(text) / CHARS_PER_SECOND)


def read_dit(path: str) -> dict[str, Any]:
    """The payload of a DiT checkpoint: a file, a checkpoints folder (its `latest`), or a run's
    out_dir (`<out_dir>/checkpoints`). Raises UsageError naming `path` when there is none."""
    fs, root = url_to_fs(path)
    if not fs.exists(root):
        raise UsageError(f"--dit {path}: no such file or folder")
    if fs.isfile(root):
        try:
            payload = torch.load(io.BytesIO(fs.cat_file(root)), map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001  # not a torch file, truncated, pickled code refused
            raise UsageError(f"--dit {path}: cannot read it as a checkpoint ({type(err).__name__})") from None
    else:
        base = path.rstrip("/")
        payload = checkpointing.load_latest(base) or checkpointing.load_latest(f"{base}/checkpoints")
        if payload is None:
            raise UsageError(
                f"--dit {path}: no DiT checkpoint there (looked for {base}/latest and {base}/checkpoints/latest)"
            )
    if not isinstance(payload, dict) or payload.get("format") != "losatok-dit-checkpoint":
        raise UsageError(f"--dit {path}: not a DiT checkpoint written by losatok-train-dit")
    return payload


def dit_from_payload(
    payload: dict[str, Any], use_ema: bool = True
) -> tuple[DiT, torch.Tensor | None, torch.Tensor | None, int]:
    """(model, latent mean, latent std, step) of a DiT checkpoint payload."""
    text = payload.get("text_encoder") or {}
    model = build_dit(DiTConfig.from_dict(payload["dit_config"]), text.get("factory"), text.get("path"))
    if use_ema:  # AveragedModel keeps the averaged copy under "module."
        state = {k.removeprefix("module."): v for k, v in payload["ema"].items() if k.startswith("module.")}
    else:
        state = payload["model"]
    model.load_state_dict(state)
    return model.eval(), payload.get("latent_mean"), payload.get("latent_std"), payload["step"]


def load_dit(path: str, use_ema: bool = True) -> tuple[DiT, torch.Tensor | None, torch.Tensor | None, int]:
    """(model, latent mean, latent std, step) from a checkpoint file or the latest under a folder."""
    return dit_from_payload(read_dit(path), use_ema)


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
    p = Parser(
        prog="losatok-generate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--dit",
        required=True,
        help="a losatok-train-dit out_dir, its checkpoints folder, or one checkpoint file",
    )
    p.add_argument(
        "--tokenizer",
        type=existing_path,
        help="LoSATok checkpoint (ours carries its config; a published one takes --preset); "
        "default: the tokenizer that made the DiT's training data",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="config of a published --tokenizer file; without --tokenizer, an untrained model of this preset",
    )
    p.add_argument(
        "--text", action="append", required=True, help="a transcript or caption; repeat for several"
    )
    p.add_argument(
        "--seconds", type=positive_float, help="duration of every output; default: estimated from each text"
    )
    p.add_argument("--steps", type=positive_int, default=32)
    p.add_argument("--method", choices=("euler", "midpoint"), default="midpoint")
    p.add_argument(
        "--cfg", type=non_negative_float, default=3.0, help="classifier-free guidance scale (1 = none)"
    )
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same audio")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--out", default="out/samples")
    args = p.parse_args(argv)

    try:
        check_output_dir(args.out, "--out")
        payload = read_dit(args.dit)
        record = payload.get("tokenizer")
        tokenizer, trained = build_tokenizer(record, args.tokenizer, args.preset)
    except (UsageError, CheckpointError, ValueError, OSError) as err:
        fail(str(err))
    model, mean, std, step = dit_from_payload(payload, use_ema=not args.no_ema)
    if tokenizer.config.latent_dim != model.config.latent_dim:
        fail(
            f"the DiT makes {model.config.latent_dim}-dim latents, the tokenizer decodes "
            f"{tokenizer.config.latent_dim}: name the tokenizer that made its data with --tokenizer"
        )
    if not trained:
        warn(
            f"the tokenizer that made the DiT's data is an UNTRAINED {tokenizer.config.preset} model "
            f"(seeded {(record or {}).get('seed') or 0}): its audio is noise, not speech; the shapes are real. "
            "Pass --tokenizer for a trained one."
        )
    mismatch = check_tokenizer(tokenizer, record)
    if mismatch:
        warn(mismatch)
    rate = tokenizer.config.frame_rate
    frames = [math.ceil((args.seconds or estimate_seconds(t)) * rate) for t in args.text]
    latents, lengths = generate(
        model, args.text, frames, args.steps, args.method, args.cfg, args.seed, mean, std
    )
    with torch.inference_mode():
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
