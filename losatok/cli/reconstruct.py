"""`losatok-reconstruct IN OUT`: encode one audio file to LoSATok latents and decode it back."""

from __future__ import annotations

import argparse
import sys
import time

import torch

from losatok.audio import AudioError, load_audio, save_audio
from losatok.checkpoint import CheckpointError, load_model
from losatok.config import PRESETS, preset


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="losatok-reconstruct", description=__doc__)
    p.add_argument("input", help="audio file in any common format (wav, flac, mp3, ogg, opus, m4a)")
    p.add_argument("output", help="where to write the 16 kHz reconstruction (format from the extension)")
    p.add_argument(
        "--checkpoint", help="our checkpoint, or a published losatok_kl1e-*.pth (needs --preset official)"
    )
    p.add_argument("--semantic-encoder", help="a published semantic_encoder.pth loaded over the encoder")
    p.add_argument(
        "--preset",
        default="official",
        choices=sorted(PRESETS),
        help="config for published or no checkpoint; official with no --checkpoint fetches the published weights",
    )
    p.add_argument("--variant", default="kl1e-3", help="published weights to fetch: kl1e-3 or kl1e-2")
    p.add_argument("--revision", help="Hugging Face Hub branch, tag or commit of the published weights")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sample", action="store_true", help="decode a posterior sample instead of the mean")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        model = load_model(
            args.checkpoint,
            preset(args.preset),
            args.semantic_encoder,
            variant=args.variant,
            revision=args.revision,
        ).to(args.device)
    except (CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.checkpoint is None and model.config.preset != "official":  # official: published weights
        print(
            f"WARNING: no --checkpoint given: this {args.preset} model is UNTRAINED (random weights). "
            "Its output is noise, not a reconstruction; the shapes are real.",
            file=sys.stderr,
        )
    try:
        wav = load_audio(args.input, model.config.sample_rate)
    except AudioError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if wav.numel() < model.min_samples:
        print(
            f"error: {args.input}: {wav.numel()} samples is shorter than the {model.min_samples} the model needs",
            file=sys.stderr,
        )
        return 2

    started = time.perf_counter()
    result = model.encode(wav.to(args.device), sample=args.sample)
    audio = model.decode(result.z, result.frames)[0]
    elapsed = time.perf_counter() - started
    save_audio(args.output, audio, model.config.sample_rate)

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
