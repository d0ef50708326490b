"""Training loader start-up at corpus scale: time and peak RSS of one rank opening a dataset and
planning its epoch, against the whole-index baseline, on a synthetic index (no tar is read).

    PYTHONPATH=. python bench/loader_scale.py                                 # 1e5, 1e6, 1e7 samples
    PYTHONPATH=. python bench/loader_scale.py --samples 100000 1000000 --worlds 1 8   # quicker

A dataset of N samples is written once per size under --root (fragments of --per-shard rows,
a real card, `shards.parquet`); no tars: planning reads only the card, the summary and index
fragments. Each measurement runs in a fresh process and reports its own wall time and peak
RSS above its imports:
- baseline: what the loader did before this wave, per rank: the whole index's key, shard and
  frame_count columns as Python tuples in a dict (the plan itself came on top); skipped above
  --baseline-max samples, as it needs ~0.9 KB a sample;
- loader, world W: `LatentLoader(rank=0, world_size=W)` and this rank's plan of epoch 0 (the
  count all ranks agree on is one all-reduce in a real run, not measured here).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def make_dataset(root: Path, samples: int, per_shard: int) -> str:
    """A dataset of `samples` index rows without tars: a real card and summary, synthetic fragments."""
    from losatok_data.index import INDEX_SCHEMA, ShardInfo, write_shard_summary
    from losatok_data.layout import DatasetLayout, shard_name
    from losatok_data.testing import write_fake_dataset

    path = root / f"n{samples}"
    if (path / "shards.parquet").exists():
        return str(path)
    shutil.rmtree(path, ignore_errors=True)
    write_fake_dataset(str(path), n_shards=1, samples_per_shard=1)  # its card: tokenizer, fields, stats
    shutil.rmtree(path / "index")
    (path / "index").mkdir()
    layout = DatasetLayout(str(path), {})
    rng = np.random.default_rng(0)
    infos = []
    for number in range(-(-samples // per_shard)):
        count = min(per_shard, samples - number * per_shard)
        frames = rng.integers(25, 750, count)  # 1 to 30 s at 25 Hz
        name = shard_name(number)
        columns = {
            "key": pa.array([f"corpus/{number:06d}/{i:05d}" for i in range(count)]),
            "shard": pa.array([name] * count),
            "frame_count": pa.array(frames, pa.int64()),
            "duration": pa.array(frames / 25.0, pa.float64()),
            "source": pa.array([f"/corpus/{number:06d}/{i:05d}.flac" for i in range(count)]),
            "offset": pa.array(np.zeros(count), pa.float64()),
            "fields": pa.array([["latent"]] * count, pa.list_(pa.string())),
        }
        table = pa.table(
            {f.name: columns.get(f.name, pa.nulls(count, f.type)) for f in INDEX_SCHEMA}, schema=INDEX_SCHEMA
        )
        pq.write_table(table, layout.index_path(number))
        infos.append(ShardInfo(number, name, count, int(frames.sum()), float(frames.sum() / 25.0)))
    write_shard_summary(layout, infos)
    return str(path)


def measure(kind: str, path: str, world: int) -> dict:
    """Run in a fresh process: wall time and peak RSS above imports."""
    import jobs.data  # noqa: F401  (imports before the baseline RSS)
    from losatok_data.reader import open_dataset

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if kind == "baseline":
        reader = open_dataset(path)
        index = reader.index().select(["shard", "key", "frame_count"]).to_pydict()
        rows: dict[str, list] = {}
        for shard, key, frames in zip(index["shard"], index["key"], index["frame_count"], strict=True):
            rows.setdefault(shard, []).append((key, min(frames, 500)))
        batches = None
    else:
        from jobs.data import LatentLoader, LoaderConfig

        loader = LatentLoader(LoaderConfig(path=path), latent_dim=16, rank=0, world_size=world)
        plans = loader.batches._plan_rank(0)  # this rank's streams; the count is an all-reduce in a run
        batches = sum(p.batches for p in plans)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"wall_s": wall, "rss_mb": (peak - before) / 1024, "batches": batches}


def child(kind: str, path: str, world: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, path, str(world)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--worlds", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--per-shard", type=int, default=1000)
    parser.add_argument("--baseline-max", type=int, default=1_000_000)
    parser.add_argument("--root", default="/tmp/losatok-loader-scale")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "PATH", "WORLD"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1], int(args.child[2]))))
        return
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    print("| samples | what | start-up (open + plan one epoch) | peak RSS above imports | bytes/sample |")
    print("| --- | --- | --- | --- | --- |")
    for samples in args.samples:
        made = time.perf_counter()
        path = make_dataset(root, samples, args.per_shard)
        print(f"<!-- {samples} samples written in {time.perf_counter() - made:.0f} s -->", file=sys.stderr)
        runs = [("baseline (whole index as tuples)", "baseline", 1)] if samples <= args.baseline_max else []
        runs += [(f"loader, world {w} (rank 0)", "loader", w) for w in args.worlds]
        for label, kind, world in runs:
            r = child(kind, path, world)
            share = samples / world if kind == "loader" else samples
            print(
                f"| {samples:.0e} | {label} | {r['wall_s']:.2f} s | {r['rss_mb']:.0f} MB | "
                f"{r['rss_mb'] * 2**20 / share:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
