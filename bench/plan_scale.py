"""Planning at scale: time and driver peak RSS of planning a synthetic manifest (no audio is read).

    PYTHONPATH=. python bench/plan_scale.py                      # 1 and 10 million rows (several minutes)
    PYTHONPATH=. python bench/plan_scale.py --rows 1000000 --mid-rows 200000   # quicker

Each measurement runs in a fresh process and reports that process's peak RSS:
- baseline: what the pipeline did before plans were partitioned: the whole listing as Python
  objects (`list_manifest`), every unit (`make_units`), one plan table, read back as units
  (`units_from_table`); at `--baseline-rows` only, as it grows by ~2.4 KB per input;
- streamed, new: `PlanStore.append` of the whole manifest into plan partitions, then the
  references of every pending unit (what a first run does before starting Ray), at the same
  `--baseline-rows` for a like-for-like ratio, and at `--mid-rows` and `--rows`;
- streamed, append: the same manifest listed again against that plan (nothing new; every
  input looked up), what every later run does, at `--mid-rows` and `--rows`;
- listing only: the manifest's items read and dropped, the source's own share of the peak.

The streamed peak should not grow with the rows (the key hashes are compared a bucket at a
time from local temporary files, `pipelines.spill`): the last line gives the ratio of the
peaks at `--rows` and `--mid-rows`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq


def make_manifest(path: Path, rows: int, chunk: int = 1_000_000) -> None:
    """`rows` rows: location, id, text, speaker; written a chunk at a time (row groups of 1M rows)."""
    schema = pa.schema(
        [("location", pa.string()), ("id", pa.string()), ("text", pa.string()), ("speaker", pa.string())]
    )
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, chunk):
            numbers = range(start, min(rows, start + chunk))
            writer.write_table(
                pa.table(
                    {
                        "location": [
                            f"s3://corpus/audio/spk{i % 5000:05d}/utt{i:010d}.flac" for i in numbers
                        ],
                        "id": [f"utt{i:010d}" for i in numbers],
                        "text": [f"transcript of utterance number {i}" for i in numbers],
                        "speaker": [f"spk{i % 5000:05d}" for i in numbers],
                    },
                    schema=schema,
                )
            )


def child(mode: str, manifest: str, root: str) -> dict:
    from losatok_input.sources.manifest import iter_manifest_items, list_manifest
    from pipelines.config import SourceConfig
    from pipelines.plan import PlanStore, make_units, plan_table, units_from_table

    source = SourceConfig(kind="manifest", path=manifest)
    started = time.perf_counter()
    if mode == "baseline":
        units = make_units(list_manifest(source), 256, 1 << 40)
        table = plan_table(units)
        units = units_from_table(table)
        count, inputs = len(units), table.num_rows
    elif mode == "listing":
        inputs = sum(1 for _ in iter_manifest_items(source))
        count = 0
    else:
        store = PlanStore(fsspec.filesystem("file"), root)
        report = store.append(
            iter_manifest_items(source), source=manifest, source_kind="manifest", run_id=mode,
            inputs_per_shard=256, shard_input_bytes=1 << 40,
        )  # fmt: skip
        refs = store.pending(set())
        count, inputs = len(refs), report.inputs_listed
        assert report.inputs_new == (inputs if mode == "new" else 0)
    seconds = time.perf_counter() - started
    return {"mode": mode, "inputs": inputs, "units": count, "seconds": seconds, "peak_bytes": peak_rss()}


def peak_rss() -> int:
    """This process's peak RSS in bytes: VmHWM, the high-water mark of its own memory map.

    Not getrusage's ru_maxrss: Linux folds the RSS of the forked parent at `exec` into it, so a
    child started by a parent holding a manifest's lists reports at least the parent's size.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    return (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )  # not Linux: KiB on Linux, bytes on macOS


def measure(mode: str, manifest: Path, root: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(manifest), str(root)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def show(name: str, result: dict) -> None:
    per_input = result["peak_bytes"] / result["inputs"]
    print(
        f"  {name:<28}{result['inputs']:>11,} inputs {result['units']:>7,} units {result['seconds']:>8.1f} s "
        f"peak RSS {result['peak_bytes'] / 2**20:>7.0f} MiB ({per_input:,.0f} B/input)",
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--mid-rows", type=int, default=1_000_000)
    p.add_argument("--baseline-rows", type=int, default=200_000)
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return

    with tempfile.TemporaryDirectory(prefix="losatok-plan-bench-") as tmp:
        work = Path(tmp)
        small = work / "small.parquet"
        make_manifest(small, args.baseline_rows)
        print(
            "planning synthetic manifests (256 inputs per unit); "
            f"{args.baseline_rows:,}, {args.mid_rows:,} and {args.rows:,} rows"
        )
        base = measure("baseline", small, work / "unused")
        show("baseline (lists in memory)", base)
        same = measure("new", small, work / "small-ds")
        show("streamed, new", same)
        print(
            f"  at {args.baseline_rows:,} rows: streamed / baseline peak RSS = "
            f"{same['peak_bytes'] / base['peak_bytes']:.2f}, time = {same['seconds'] / base['seconds']:.2f}",
            flush=True,
        )
        peaks = {}
        for rows in (args.mid_rows, args.rows):
            manifest = work / f"manifest-{rows}.parquet"
            start = time.perf_counter()
            make_manifest(manifest, rows)
            print(f"  ({rows:,}-row manifest written in {time.perf_counter() - start:.0f} s)", flush=True)
            listing = measure("listing", manifest, work / "unused")
            show("listing only (the source)", listing)
            new = measure("new", manifest, work / f"ds-{rows}")
            show("streamed, new", new)
            again = measure("append", manifest, work / f"ds-{rows}")
            show("streamed, append (0 new)", again)
            peaks[rows] = (max(new["peak_bytes"], again["peak_bytes"]), listing["peak_bytes"])
        (big, big_listing), (mid, mid_listing) = peaks[args.rows], peaks[args.mid_rows]
        print(
            f"  driver peak RSS at {args.rows:,} rows / at {args.mid_rows:,} rows = {big / mid:.2f} "
            f"({big / 2**20:.0f} MiB / {mid / 2**20:.0f} MiB); above the listing's own peak: "
            f"{(big - big_listing) / 2**20:.0f} MiB / {(mid - mid_listing) / 2**20:.0f} MiB"
        )
        linear = base["peak_bytes"] / base["inputs"] * args.rows
        print(f"  the baseline's per-input growth would need {linear / 2**30:.1f} GiB at {args.rows:,} rows")


if __name__ == "__main__":
    main()
