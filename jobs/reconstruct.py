"""`losatok-reconstruct IN OUT`: encode one audio file to LoSATok latents and decode it back."""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from jobs.usage import Parser, add_tokenizer_arguments, existing_path, fail, load_tokenizer
from losatok.audio import save_audio
from losatok_input.decoder import AudioError, load_audio


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
    add_tokenizer_arguments(
        p, "our checkpoint (its config inside), or a published losatok_kl1e-*.pth (config: --preset)"
    )
    p.add_argument("--device", type=device, default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sample", action="store_true", help="decode a posterior sample instead of the mean")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        fail(f"cannot write {args.output}: {folder} is not a writable folder")
    model = load_tokenizer(args)
    try:
        model = model.to(args.device)
    except RuntimeError as err:  # e.g. --device cuda on a machine without one
        fail(str(err))
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
