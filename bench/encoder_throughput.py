"""Encoder throughput of the LoSATok presets: audio seconds encoded per wall second.

    python bench/encoder_throughput.py [--presets tiny official] [--batch-sizes 1 2 4 8] [--seconds 5]

Sweeps the batch size for each preset on the available device (CUDA with bf16 autocast when
present, else CPU in float32), reports the speed-up of each batch size over batch size 1
measured in the same run, and the parameter count of every module. Weights are random: speed
does not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from losatok import LoSATok, preset

MODULES = {
    "semantic encoder (frozen)": "semantic_encoder.encoder",
    "SemBo": "semantic_encoder.bottleneck",
    "acoustic branch": "dasheng_tokenizer.encoder",
    "fusion + VAE head": "fc_",
    "upsampler": "dasheng_tokenizer.upsampler",
    "Vocos decoder": "dasheng_tokenizer.decoder",
}


def parameter_counts(model: LoSATok) -> dict[str, int]:
    counts = {
        label: sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))
        for label, prefix in MODULES.items()
    }
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def time_encode(model: LoSATok, batch: int, seconds: float, repeats: int, device: torch.device) -> float:
    """Median audio seconds per wall second over `repeats` timed runs after one warm-up."""
    wav = torch.randn(batch, int(seconds * model.config.sample_rate), device=device) * 0.1
    model.encode(wav)  # warm-up: kernel selection, allocator
    rates = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model.encode(wav)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(batch * seconds / (time.perf_counter() - start))
    return sorted(rates)[len(rates) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["tiny", "official"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 2, 4, 8])
    p.add_argument("--seconds", type=float, default=5.0, help="length of each clip")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()

    device = torch.device(args.device)
    info = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} threads"
    )
    print(f"device: {device} ({info}); torch {torch.__version__}; clip {args.seconds:g} s")
    results = {"device": str(device), "device_info": info, "seconds": args.seconds, "presets": {}}
    for name in args.presets:
        torch.manual_seed(0)
        model = LoSATok(preset(name)).eval().to(device)
        counts = parameter_counts(model)
        print(f"\n== {name} ==")
        for label, count in counts.items():
            print(f"  {label:<28}{count:>14,}")
        print(f"  {'batch':>5} {'audio s / wall s':>18} {'vs batch 1':>11}")
        rates = {}
        for batch in args.batch_sizes:
            rates[batch] = time_encode(model, batch, args.seconds, args.repeats, device)
            base = rates[args.batch_sizes[0]]
            print(f"  {batch:>5} {rates[batch]:>18.1f} {rates[batch] / base:>10.2f}x")
        results["presets"][name] = {"parameters": counts, "audio_seconds_per_second": rates}
        del model
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
