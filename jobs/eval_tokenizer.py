"""`losatok-eval-tokenizer`: reconstruction quality of a tokenizer on held-out audio.

    losatok-eval-tokenizer /data/heldout --checkpoint out/tokenizer/losatok.pth --out eval.json
    losatok-eval-tokenizer /data/heldout --checkpoint ckpts/losatok_kl1e-3.pth --preset official

Our checkpoints (losatok-train-tokenizer's export included) carry their config; --preset is
the config of a published file, which carries none.

Encodes and decodes every audio file under the folder (or the first --max-files of them) and
reports mel distance, multi-resolution STFT distance, SI-SDR, and the semantic preservation of
SemBo (cosine similarity of up(down(h)) with h), per file and averaged, as a table and JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from jobs.usage import Parser, add_tokenizer_arguments, existing_path, fail, load_tokenizer
from losatok.metrics import mel_distance, semantic_preservation, si_sdr, stft_distance
from losatok_input.decoder import AudioError, load_audio
from losatok_input.listing import iter_audio_files
from losatok_input.rule import SkippedFiles

METRICS = ("mel_distance", "stft_distance", "si_sdr", "semantic_preservation")


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


@torch.inference_mode()
def evaluate_file(model, path: Path) -> dict[str, float]:
    wav = load_audio(path, model.config.sample_rate)
    result = model.encode(wav)
    audio = model.decode(result.z, result.frames)[0]
    item = result.item(0)
    reconstruction = model.semantic_encoder.bottleneck.upsample(item["semantic_low"])
    return {
        "mel_distance": mel_distance(wav, audio, model.config.sample_rate),
        "stft_distance": stft_distance(wav, audio),
        "si_sdr": si_sdr(wav, audio),
        "semantic_preservation": semantic_preservation(item["semantic_high"], reconstruction),
    }


def audio_files(folder: Path) -> tuple[list[Path], SkippedFiles]:
    """Audio files under `folder` by the pipeline's rule (`losatok_input.listing`), sorted, and the
    files left out counted by reason."""
    unlisted = SkippedFiles()
    files = sorted(Path(listed.location) for listed in iter_audio_files(str(folder), skipped=unlisted))
    return files, unlisted


def main(argv: list[str] | None = None) -> int:
    p = Parser(
        prog="losatok-eval-tokenizer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("data", type=existing_path, help="folder of held-out audio files")
    add_tokenizer_arguments(
        p, "tokenizer checkpoint: ours (config inside) or published (config: --preset); none: see --preset"
    )
    p.add_argument("--max-files", type=non_negative_int, default=0, help="0: all")
    p.add_argument("--out", help="write the report as JSON here")
    args = p.parse_args(argv)
    if args.out and not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        fail(f"--out {args.out}: its folder does not exist")

    files, unlisted = audio_files(Path(args.data))
    files = files[: args.max_files] if args.max_files else files
    if unlisted.total:
        print(unlisted.describe(), file=sys.stderr)
    if not files:
        fail(
            f"no audio files under {args.data} (FFmpeg's audio extensions, other files probed); "
            f"{unlisted.describe()}"
        )
    model = load_tokenizer(args)
    rows, skipped = {}, {}
    for path in files:
        try:
            rows[str(path)] = evaluate_file(model, path)
        except (AudioError, ValueError) as err:
            skipped[str(path)] = str(err)
    if not rows:
        print(f"error: none of the {len(files)} files could be evaluated", file=sys.stderr)
        return 1  # the inputs failed, not the usage
    mean = {m: sum(r[m] for r in rows.values()) / len(rows) for m in METRICS}
    print(f"{'file':<40}" + "".join(f"{m:>24}" for m in METRICS))
    for path, row in rows.items():
        print(f"{Path(path).name[:40]:<40}" + "".join(f"{row[m]:>24.4f}" for m in METRICS))
    print(f"{'mean of ' + str(len(rows)) + ' files':<40}" + "".join(f"{mean[m]:>24.4f}" for m in METRICS))
    for path, reason in skipped.items():
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if args.out:
        report = {"mean": mean, "files": rows, "skipped": skipped, "not_audio": unlisted.to_dict()}
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
