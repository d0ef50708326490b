"""Bad usage of a command ends with one line naming the culprit and exit status 2, never a traceback.

argparse's own error prints the whole usage block before the message; here the message comes
alone, on one line, with a pointer to `--help`. Exit 1 stays free for "the run itself failed".
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from losatok_storage.paths import is_url

USAGE_EXIT = 2  # the conventional status of a usage error (argparse, getopt, BSD sysexits' EX_USAGE aside)


class UsageError(ValueError):
    """A command-line value that cannot work; the message names it and says what would."""


def fail(message: str) -> NoReturn:
    """Print `error: <message>` as one line on stderr and exit with status 2."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(USAGE_EXIT)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (`prog: error: ...; see --help`) and exit 2."""

    def error(self, message: str) -> NoReturn:
        fail(f"{self.prog}: {message} (see {self.prog} --help)")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number >= 0")
    return value


def existing_path(text: str) -> str:
    """A local file or folder that exists (URLs with a scheme are left to their loaders)."""
    if not is_url(text) and not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    return text


def check_output_dir(path: str, option: str) -> str:
    """Refuse, before any work, an output folder that cannot be made: a parent that is a file, a
    read-only place. Nothing is created here, so a refused command leaves nothing behind."""
    if is_url(path):
        return path
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UsageError(f"{option}={path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{option}={path}: {probe} is not writable")
    return path


def check_exists(path: str | None, option: str) -> None:
    """A local input named by `option` must exist (URLs are left to their loaders)."""
    if path and not is_url(path) and not os.path.exists(path):
        raise UsageError(f"{option}={path}: no such file or folder")


def add_tokenizer_arguments(parser: argparse.ArgumentParser, checkpoint_help: str) -> None:
    """The options that name a tokenizer: a checkpoint, or a preset (official: the published
    weights, `--variant` at `--revision`), and an optional semantic encoder loaded over it."""
    from losatok.config import PRESETS

    parser.add_argument("--checkpoint", type=existing_path, help=checkpoint_help)
    parser.add_argument(
        "--semantic-encoder",
        type=existing_path,
        help="a published semantic_encoder.pth loaded over the encoder",
    )
    parser.add_argument(
        "--preset",
        default="official",
        choices=sorted(PRESETS),
        help="config of a published or no checkpoint; official with no --checkpoint: the published weights",
    )
    parser.add_argument("--variant", default="kl1e-3", help="published weights to fetch: kl1e-3 or kl1e-2")
    parser.add_argument("--revision", help="Hugging Face Hub branch, tag or commit of the published weights")


def load_tokenizer(args: argparse.Namespace):  # -> losatok.LoSATok (imported lazily: torch)
    """The tokenizer `add_tokenizer_arguments` named; one line and exit 2 when it cannot be had,
    and a warning when it is an untrained preset (its output is noise)."""
    from losatok.checkpoint import CheckpointError
    from losatok.config import preset
    from losatok.loading import load_model

    try:
        model = load_model(
            args.checkpoint,
            preset(args.preset),
            args.semantic_encoder,
            variant=args.variant,
            revision=args.revision,
        )
    except (CheckpointError, ValueError) as err:
        fail(str(err))
    if args.checkpoint is None and args.preset != "official":  # official: the published weights
        print(
            f"WARNING: no --checkpoint given: this {args.preset} model is UNTRAINED (random weights); "
            "its output is noise, only its shapes are real",
            file=sys.stderr,
        )
    return model
