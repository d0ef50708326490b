"""`losatok-reconstruct IN OUT`: encode one audio file to LoSATok latents and decode it back."""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from losatok.audio import AudioError, load_audio, save_audio
from losatok.checkpoint import CheckpointError, load_model
from losatok.cli.usage import Parser, existing_path, fail
from losatok.config import PRESETS, preset


def device(text: str) -> str:
    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device (cpu, cuda, cuda:1, ...)") from None
    return text


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="losatok-reconstruct", description=__doc__)
    p.add_argument(
        "input", type=existing_path, help="audio file in any common format (wav, flac, mp3, ogg, opus, m4a)"
    )
    p.add_argument("output", help="where to write the 16 kHz reconstruction (format from the extension)")
    p.add_argument(
        "--checkpoint",
        type=existing_path,
        help="our checkpoint (its config inside), or a published losatok_kl1e-*.pth (config: --preset)",
    )
    p.add_argument(
        "--semantic-encoder",
        type=existing_path,
        help="a published semantic_encoder.pth loaded over the encoder",
    )
    p.add_argument(
        "--preset",
        default="official",
        choices=sorted(PRESETS),
        help="config for published or no checkpoint; official with no --checkpoint fetches the published weights",
    )
    p.add_argument("--variant", default="kl1e-3", help="published weights to fetch: kl1e-3 or kl1e-2")
    p.add_argument("--revision", help="Hugging Face Hub branch, tag or commit of the published weights")
    p.add_argument("--device", type=device, default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sample", action="store_true", help="decode a posterior sample instead of the mean")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        fail(f"cannot write {args.output}: {folder} is not a writable folder")
    try:
        model = load_model(
            args.checkpoint,
            preset(args.preset),
            args.semantic_encoder,
            variant=args.variant,
            revision=args.revision,
        ).to(args.device)
    except (CheckpointError, RuntimeError, ValueError) as err:  # RuntimeError: e.g. --device cuda without one
        fail(str(err))
    if args.checkpoint is None and model.config.preset != "official":  # official: published weights
        print(
            f"WARNING: no --checkpoint given: this {args.preset} model is UNTRAINED (random weights). "
            "Its output is noise, not a reconstruction; the shapes are real.",
            file=sys.stderr,
        )
    try:
        wav = load_audio(args.input, model.config.sample_rate)
    except AudioError as err:
        fail(str(err))
    if wav.numel() < model.min_samples:
        fail(f"{args.input}: {wav.numel()} samples is shorter than the {model.min_samples} the model needs")

    started = time.perf_counter()
    result = model.encode(wav.to(args.device), sample=args.sample)
    audio = model.decode(result.z, result.frames)[0]
    elapsed = time.perf_counter() - started
    try:
        save_audio(args.output, audio, model.config.sample_rate)
    except (OSError, RuntimeError, ValueError) as err:  # no such folder, read-only, unknown extension
        fail(f"cannot write {args.output}: {err}")

    seconds = wav.numel() / model.config.sample_rate
    print(f"input         {args.input}: {seconds:.2f} s at {model.config.sample_rate} Hz")
    for name, value in result.item(0).items():
        print(f"{name:<14}{tuple(value.shape)}")
    print(
        f"output        {args.output}: {tuple(audio.shape)} samples ({audio.numel() / model.config.sample_rate:.2f} s)"
    )
    print(f"time          {elapsed:.2f} s ({seconds / elapsed:.1f}x real time on {args.device})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
