"""Per-file costs of each pipeline stage, profiled in this process on many short files.

    python bench/stage_costs.py [--files 600] [--per-shard 64] [--top 0]

Makes --files 16 kHz mono wav files of 1 to 4 s (bench/vs_loop.py's small corpus), then runs
each stage's body, as the pipeline's Ray workers run it, under cProfile in this process, one
thread: the decode task (`decode_stage`: its unit read from the plan partition, the inputs
decoded and segmented, the payload packed), the encode actor (`EncodeStage`, the tiny model)
and the commit actor (`CommitStage`: shard tars, checksums, stats, index fragment). Prints
milliseconds per file by stage and part, where a part is the cumulative time of the functions
named beside it. Ray's own share (scheduling, object transfer, idle waits) is what the
pipeline's wall time on the same files (bench/vs_loop.py) holds beyond these. --top N also
prints each stage's N costliest functions.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fsspec  # noqa: E402
import numpy as np  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from vs_loop import make_corpus  # noqa: E402

from losatok import preset  # noqa: E402
from losatok_input.sources import list_inputs  # noqa: E402
from pipelines.commit import CommitStage  # noqa: E402
from pipelines.config import ModelConfig, SinkConfig, SourceConfig, TokenizeConfig  # noqa: E402
from pipelines.dataflow import EncodeStage, decode_arguments, decode_stage, encode_arguments  # noqa: E402
from pipelines.plan import make_units, write_partition  # noqa: E402
from pipelines.run import run_identity  # noqa: E402
from pipelines.sink import SinkDataset  # noqa: E402

# part of a stage -> (file fragment, function name) pairs whose cumulative time it is
PARTS = {
    "decode": {
        "plan partition read": [("pipelines/plan.py", "load_unit")],
        "open and probe (torchcodec, wav header)": [("losatok_input/decoder.py", "__init__")],
        "decode and resample": [("losatok_input/decoder.py", "span")],
        "checks and segmenting": [("pipelines/decode.py", "to_segments")],
        "payload pack": [("pipelines/records.py", "pack_payload")],
    },
    "encode": {
        "payload unpack": [("pipelines/records.py", "unpack_payload")],
        "model forward": [("losatok/", "encode")],
        "batching and arrays": [("pipelines/encode.py", "_run")],
        "payload pack": [("pipelines/records.py", "pack_payload")],
    },
    "commit": {
        "payload unpack": [("pipelines/records.py", "unpack_payload")],
        "tar members": [("losatok_data/writer.py", "write_shard")],
        "checksums": [("losatok_data/checksums.py", "")],
        "index and stats": [("losatok_data/index.py", ""), ("losatok_data/stats.py", "")],
        "ledger": [("losatok_data/ledger.py", "write_failures")],
    },
}


def cumulative(stats: pstats.Stats, where: str, name: str) -> float:
    """Seconds spent in functions of a file matching `where` named `name` ("" = any), not
    counting a call of one of them inside another (the outermost calls only)."""
    total = 0.0
    for (path, _, function), (_, _, _, cum, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if where in path.replace(os.sep, "/") and (not name or function == name):
            inner = any(where in c[0] and (not name or c[2] == name) for c in callers)
            total += 0.0 if inner else cum
    return total


def profiled(call) -> tuple[object, pstats.Stats, float]:
    profile = cProfile.Profile()
    started = time.perf_counter()
    result = profile.runcall(call)
    return result, pstats.Stats(profile), time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=600)
    p.add_argument("--per-shard", type=int, default=64)
    p.add_argument("--top", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    # the stage bodies ask Ray which node they run on: a local Ray of one CPU, never any other
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    work = Path(tempfile.mkdtemp(prefix="losatok-stage-costs-"))
    audio = make_corpus(work / "corpus", args.files, 1.0, 4.0, np.random.default_rng(0))
    config = TokenizeConfig(
        source=SourceConfig(path=str(work / "corpus")),
        sink=SinkConfig(path=str(work / "ds"), inputs_per_shard=args.per_shard),
        model=ModelConfig(preset="tiny"),
    )
    tokenizer = preset("tiny")
    units = make_units(list_inputs(config.source), args.per_shard, 1 << 40)
    plan = str(work / "plan-part.parquet")
    write_partition(fsspec.filesystem("file"), plan, units)
    dataset = SinkDataset.open(config.sink, config.fields, tokenizer, run_identity(config, tokenizer))
    encoder = EncodeStage(**encode_arguments(config))
    committer = CommitStage(dataset.committer())
    list(
        decode_stage({"unit": [units[0].index], "plan": [plan]}, **decode_arguments(config, 16_000))
    )  # warm-up

    def decode_all():
        return [
            out
            for u in units
            for out in decode_stage({"unit": [u.index], "plan": [plan]}, **decode_arguments(config, 16_000))
        ]

    decoded, decode_stats, decode_wall = profiled(decode_all)
    encoded, encode_stats, encode_wall = profiled(lambda: [encoder(batch) for batch in decoded])
    _, commit_stats, commit_wall = profiled(lambda: [committer(batch) for batch in encoded])
    files = args.files
    print(
        f"{files} wav files of 1 to 4 s, {audio:.0f} s of audio, {len(units)} units; one thread, cProfile on"
    )
    print("| stage | part | ms per file | share of the stage |")
    print("| --- | --- | --- | --- |")
    for stage, stats, wall in (
        ("decode", decode_stats, decode_wall),
        ("encode", encode_stats, encode_wall),
        ("commit", commit_stats, commit_wall),
    ):
        for part, functions in PARTS[stage].items():  # parts may nest (the model inside batching)
            seconds = sum(cumulative(stats, where, name) for where, name in functions)
            print(f"| {stage} | {part} | {1000 * seconds / files:.2f} | {100 * seconds / wall:.0f} % |")
        print(f"| {stage} | **whole stage** | **{1000 * wall / files:.2f}** | 100 % |")
        if args.top:
            stats.sort_stats("cumulative").print_stats(args.top)
    print(f"work folder (delete when done): {work}")


if __name__ == "__main__":
    main()
