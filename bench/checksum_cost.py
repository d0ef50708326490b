"""What member checksums cost the commit stage, and what verify's full mode costs over --quick.

    python bench/checksum_cost.py [--samples 256] [--seconds 10] [--fields default|all] [--repeats 5]

Writes shards of the official model's widths (latent and semantic_low 128-dim at 25 Hz,
float16; `--fields all` adds logvar and the 1280-dim semantic targets) with `write_shard`, the
pipeline's commit step, to a local temporary folder, alternating:
  none     no checksums (what schema 1.0 wrote): the baseline
  crc32    zlib's CRC-32 of every member (the default)
  sha256   hashlib's SHA-256 of every member
and prints the median wall time of each and its ratio to the baseline. Then it times
`verify_dataset` on the written dataset, full (recomputes every checksum, decodes every
sample) against quick (structure only), and hashing alone in MB/s.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
import zlib
from dataclasses import replace

import numpy as np

from losatok_data.card import DatasetCard, TokenizerIdentity, write_card
from losatok_data.checksums import checksum
from losatok_data.fields import default_fields
from losatok_data.layout import DatasetLayout
from losatok_data.reader import DatasetReader
from losatok_data.sample import encode_sample
from losatok_data.stats import ChannelStats, read_stats_fragment
from losatok_data.testing import fake_sample
from losatok_data.verify import verify_dataset
from losatok_data.writer import write_shard


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=256, help="samples per shard (the pipeline's default)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of audio per sample")
    parser.add_argument("--fields", choices=("default", "all"), default="default")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    everything = args.fields == "all"
    fields = default_fields(128, 1280, logvar=everything, semantic=everything)
    rng = np.random.default_rng(0)
    frames = int(args.seconds * 25)
    samples = [fake_sample(f"utt-{i:05d}", frames, fields, rng) for i in range(args.samples)]

    with tempfile.TemporaryDirectory() as tmp:
        layout = DatasetLayout(f"{tmp}/ds")
        times: dict[str, list[float]] = {"none": [], "crc32": [], "sha256": []}
        # the digests alone, over the very member bytes a commit writes: less noisy than the
        # difference of two commit times on a busy machine
        members = [m for s in samples for k, m in encode_sample(s, fields).items() if k != "__key__"]
        shares: dict[str, list[float]] = {"crc32": [], "sha256": []}
        number = 0
        for _ in range(args.repeats):
            for algorithm in times:
                started = time.perf_counter()
                written = write_shard(
                    layout, number, samples, fields, 25.0, checksum=None if algorithm == "none" else algorithm
                )
                times[algorithm].append(time.perf_counter() - started)
                number += 1
            for algorithm in shares:
                started = time.perf_counter()
                for data in members:
                    checksum(data, algorithm)
                shares[algorithm].append((time.perf_counter() - started) / times["none"][-1])
        payload = sum(written.bytes_by_group.values())
        base, floor = statistics.median(times["none"]), min(times["none"])
        print(
            f"shard: {args.samples} samples x {args.seconds:g} s, fields {fields.names()}, "
            f"{payload / 1e6:.1f} MB of tars; {args.repeats} runs each, interleaved"
        )
        for algorithm, values in times.items():
            median, best = statistics.median(values), min(values)
            print(
                f"  commit {algorithm:<7} median {median * 1000:7.1f} ms x{median / base:.3f}, "
                f"best {best * 1000:7.1f} ms x{best / floor:.3f} of no checksums"
            )
        for algorithm, values in shares.items():
            print(
                f"  hashing alone, {algorithm:<7} {100 * statistics.median(values):5.1f} % of a commit without "
                f"checksums (median of {args.repeats} interleaved pairs)"
            )

    # verify on a dataset of distinct keys: `--repeats` shards written with the default checksum
    with tempfile.TemporaryDirectory() as tmp:
        layout = DatasetLayout(f"{tmp}/ds")
        for number in range(args.repeats):
            shard = [replace(s, key=f"{number}-{s.key}") for s in samples]
            write_shard(layout, number, shard, fields, 25.0)
        card = DatasetCard(
            tokenizer=TokenizerIdentity(preset="bench", config_hash="-"),
            fields=fields,
            latent_stats=ChannelStats.merge_all(read_stats_fragment(layout, n) for n in range(args.repeats)),
        )
        write_card(layout, replace(card, totals=DatasetReader(layout, card).measured_totals()))
        started = time.perf_counter()
        report = verify_dataset(layout)
        full = time.perf_counter() - started
        assert report.ok, report.summary()
        started = time.perf_counter()
        assert verify_dataset(layout, quick=True).ok
        quick = time.perf_counter() - started
        print(
            f"verify {args.repeats} shards: full {full:.2f} s ({report.members} checksums, "
            f"{report.samples} samples decoded), quick {quick * 1000:.1f} ms: full is x{full / quick:.0f}"
        )

    block = np.random.default_rng(1).bytes(64 << 20)
    for name, digest in (("sha256", lambda b: hashlib.sha256(b).digest()), ("crc32", zlib.crc32)):
        started = time.perf_counter()
        digest(block)
        print(f"hash {name:<7} {len(block) / (time.perf_counter() - started) / 1e6:8.0f} MB/s (one core)")


if __name__ == "__main__":
    main()
