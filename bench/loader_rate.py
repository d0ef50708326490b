"""Loader throughput against plain webdataset, and resume time at 10 % and 90 % of an epoch.

    PYTHONPATH=. python bench/loader_rate.py                     # local and loopback S3 (moto)
    PYTHONPATH=. python bench/loader_rate.py --shards 8 --no-s3  # quicker, local only

One dataset of --shards x --per-shard samples (random latents of 1 to 30 s, written by the
losatok_data writer), read for one epoch in this process (no loader workers), both sides doing
the same work per sample: read the tar, `decode_sample` (parse, validate), crop to max_frames,
normalise, pad and collate:
- webdataset: its pipeline stages (shard list, tar expander, group by keys) over the same
  fsspec files, batches of a fixed count (the mean batch size of ours);
- ours: `LatentLoader` (index-planned, frame-budgeted batches, exactly-once position).
Reported as samples/s and the ratio ours / webdataset, measured in the same run. Then the
time from `load_state_dict` to the first batch, for a state taken at 10 % and at 90 % of the
epoch (goal: within 1.5x of each other: resume is O(1) in the position).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np


def write(url: str, shards: int, per_shard: int, options: dict) -> None:
    from losatok_data.testing import write_fake_dataset

    write_fake_dataset(url, n_shards=shards, samples_per_shard=per_shard, min_frames=25, max_frames=750,
                       storage_options=options, failures=0)  # fmt: skip


def collate(samples: list, max_frames: int, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    longest = max(min(s.frame_count, max_frames) for s in samples)
    out = np.zeros((len(samples), longest, samples[0].latent.shape[1]), np.float32)
    for row, s in enumerate(samples):
        length = min(s.frame_count, max_frames)
        start = int(rng.integers(s.frame_count - length + 1))
        out[row, :length] = (s.latent[start : start + length].astype(np.float32) - mean) / std
    return out


def rate_webdataset(url: str, options: dict, max_frames: int, batch: int) -> float:
    import webdataset as wds

    from losatok_data.reader import open_dataset
    from losatok_data.sample import decode_sample

    reader = open_dataset(url, options)
    card = reader.card
    mean, std = np.asarray(card.latent_stats.mean, np.float32), np.asarray(card.latent_stats.std, np.float32)
    tars = [reader.layout.url_of(reader.layout.tar_path("latent", s.number)) for s in reader.shards()]
    fs = reader.layout.fs  # the same filesystem for both sides; webdataset's own stages do the rest

    def opened(shards):
        for shard in shards:
            path = shard["url"].removeprefix("s3://")
            yield {
                "url": shard["url"],
                "stream": fs.open(path if url.startswith("s3://") else shard["url"], "rb"),
            }

    pipeline = wds.DataPipeline(
        wds.SimpleShardList(tars), opened, wds.tariterators.tar_file_expander, wds.tariterators.group_by_keys
    )
    start, count, pending = time.perf_counter(), 0, []
    for members in pipeline:
        members = {k: v for k, v in members.items() if not k.startswith("__") or k == "__key__"}
        pending.append(decode_sample(members, card.fields, frame_rate=card.frame_rate, groups=("latent",)))
        if len(pending) == batch:
            collate(pending, max_frames, mean, std)
            count, pending = count + len(pending), []
    if pending:
        collate(pending, max_frames, mean, std)
        count += len(pending)
    return count / (time.perf_counter() - start)


def rate_ours(url: str, options: dict, max_frames: int, batch_frames: int) -> tuple[float, float]:
    from jobs.data import LatentLoader, LoaderConfig

    config = LoaderConfig(path=url, storage_options=options, batch_frames=batch_frames, max_frames=max_frames)
    start = time.perf_counter()
    loader = LatentLoader(config, latent_dim=16)
    batches = len(loader)
    count = sum(len(b.keys) for b in loader)
    return count / (time.perf_counter() - start), count / max(batches, 1)


def resume_time(url: str, options: dict, fraction: float, max_frames: int, batch_frames: int) -> float:
    from jobs.data import LatentLoader, LoaderConfig

    config = LoaderConfig(path=url, storage_options=options, batch_frames=batch_frames, max_frames=max_frames)
    loader = LatentLoader(config, latent_dim=16)
    iterator = iter(loader)
    for _ in range(int(len(loader) * fraction)):
        next(iterator)
    state = loader.state_dict()
    start = time.perf_counter()
    resumed = LatentLoader(config, latent_dim=16)
    resumed.load_state_dict(state)
    next(iter(resumed))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--per-shard", type=int, default=200)
    parser.add_argument("--max-frames", type=int, default=500)
    parser.add_argument("--batch-frames", type=int, default=6000)
    parser.add_argument("--no-s3", action="store_true")
    args = parser.parse_args()
    sites = [("local", tempfile.mkdtemp(prefix="loader-rate-") + "/ds", {})]
    server = None
    if not args.no_s3:
        import boto3
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        endpoint = f"http://127.0.0.1:{server._server.server_port}"
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket="bench")  # fmt: skip
        options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint}}
        sites.append(("loopback S3", "s3://bench/ds", options))
    print(
        f"{args.shards} shards x {args.per_shard} samples of 1-30 s; crops of {args.max_frames} frames; one process"
    )
    print("| where | webdataset samples/s | ours samples/s | ours / webdataset |")
    print("| --- | --- | --- | --- |")
    for name, url, options in sites:
        write(url, args.shards, args.per_shard, options)
        ours, per_batch = rate_ours(url, options, args.max_frames, args.batch_frames)
        plain = rate_webdataset(url, options, args.max_frames, max(1, round(per_batch)))
        print(f"| {name} | {plain:.0f} | {ours:.0f} | {ours / plain:.2f}x |", flush=True)
    print()
    print("| where | resume at 10 % | resume at 90 % | ratio |")
    print("| --- | --- | --- | --- |")
    for name, url, options in sites:
        early = resume_time(url, options, 0.1, args.max_frames, args.batch_frames)
        late = resume_time(url, options, 0.9, args.max_frames, args.batch_frames)
        print(f"| {name} | {early:.2f} s | {late:.2f} s | {late / early:.2f}x |", flush=True)
    if server is not None:
        server.stop()


if __name__ == "__main__":
    main()
