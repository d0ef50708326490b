"""Feed: how fast the dataflow moves audio when the encoder costs nothing.

    python bench/pipeline_feed.py [--files 768] [--seconds 60] [--per-shard 8]

On 16 kHz mono 16-bit wav inputs (espeak-ng speech and sox music), in one run:
  torchcodec        AudioDecoder(..., sample_rate=16000, num_channels=1) in this process, 1 thread
  stage in-process  the decode stage's body (decode_items + packing the payload), 1 thread
  stage on Ray      the decode stage alone as the pipeline's Ray tasks, nothing after them
  pipeline          the whole Ray dataflow (decode tasks -> encode actor -> commit actors) with a
                    bench-only encode actor that returns zero arrays of the right shape
Ray gets one CPU more than the decode cores, for the encode actor's reservation (it does no
work), so decode has the same cores in the last two rows; but with --decode-cores equal to
the machine's cores (the default), the pipeline's other processes (encode and commit actors,
Ray Data's scheduler in this process, the raylet) take CPU from those same cores, while
--decode-cores one less leaves them a core. Per-core rates divide by the decode cores. Ray's workers are warmed up before the timed runs; decode alone and the pipeline run
in turns, twice, and each ratio is of a pair taken back to back.

Two rates per Ray row. "With start-up": all audio over the whole wall time, which for the
pipeline includes starting its encode actor (seconds; once per run, and a real run lasts
hours). "Steady": from the moment the last stage is up (the encode actor's constructor has
returned; for decode alone, the first decode task's start) to the end, counting only the
audio of units whose decode began in that window. Units decoded while the actor started are
left out of the audio but not of the time, so the figure errs low.

Also: the payload a unit sends from decode to encode, as float32 and as int16 PCM (what the
stage sends for these inputs), with the time to pickle it, put it into Ray's object store,
get and unpickle it.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fsspec  # noqa: E402
import numpy as np  # noqa: E402
import ray  # noqa: E402

from losatok import preset  # noqa: E402
from losatok_input.sources import list_inputs  # noqa: E402
from losatok_input.testing import convert, synth_music, synth_speech  # noqa: E402
from pipelines.config import (  # noqa: E402
    ClusterConfig,
    FieldsConfig,
    ModelConfig,
    SinkConfig,
    SourceConfig,
    TokenizeConfig,
)
from pipelines.dataflow import decode_arguments, decode_stage, init_ray, run_units  # noqa: E402
from pipelines.decode import decode_items  # noqa: E402
from pipelines.encode import frames_of  # noqa: E402
from pipelines.plan import UnitRef, make_units, write_partition  # noqa: E402
from pipelines.records import EncodedSegment, StageStats, pack_payload, unpack_payload  # noqa: E402
from pipelines.run import run_identity  # noqa: E402
from pipelines.sink import SinkDataset  # noqa: E402


class NullEncodeStage:
    """Bench-only stand-in for `pipelines.dataflow.EncodeStage`: zero arrays, no model. Never shipped."""

    def __init__(
        self, model: ModelConfig, fields: FieldsConfig, max_frames: int, threads: int | None
    ) -> None:
        self.dims = {
            "latent": preset(model.preset).latent_dim,
            "semantic_low": preset(model.preset).latent_dim,
        }
        self.dtype = np.dtype(fields.dtype)
        self.ready_at = time.time()  # epoch s: the pipeline's last stage is up from here

    def __call__(self, batch):
        payloads = []
        for blob in batch["payload"]:
            unit, window, last, segments, failures, stages = unpack_payload(blob)
            results = []
            for s in segments:
                frames = frames_of(s.num_samples)
                arrays = {name: np.zeros((frames, dim), self.dtype) for name, dim in self.dims.items()}
                results.append(EncodedSegment(arrays, frames))
            stages = replace(stages, encode_node="bench", encode_seconds=0.0, encode_ready_at=self.ready_at)
            payloads.append(
                pack_payload(
                    (unit, window, last, [s.without_audio() for s in segments], results, failures, stages)
                )
            )
        return {"unit": list(batch["unit"]), "payload": payloads}


def make_corpus(root: Path, files: int, seconds: float) -> None:
    root.mkdir(parents=True)
    words = "The decoder feeds the accelerator from every core of the node. " * max(1, int(seconds / 4))
    sources = [
        synth_speech(root / "_speech.wav", words, sample_rate=22_050),
        synth_music(root / "_music.wav", seconds=seconds, sample_rate=44_100, channels=1),
    ]
    pcm = [convert(s, root / f"_{i}.16k.wav", sample_rate=16_000, channels=1) for i, s in enumerate(sources)]
    for i in range(files):
        shutil.copy(pcm[i % 2], root / f"item_{i:04d}.wav")
    for path in sources + pcm:
        path.unlink()


def payload_costs(segments, dtype, pack, unpack) -> tuple[float, float]:
    """(MiB, seconds) to pack a unit's segments with `dtype` audio, put, get and unpack them."""
    cast = [replace(s, wav=s.float_wav() if dtype == np.float32 else s.wav) for s in segments]
    start = time.perf_counter()
    blob = pack(cast)
    unpack(ray.get(ray.put(blob)))
    return len(blob) / 2**20, time.perf_counter() - start


def rates(
    units: list[tuple[float, StageStats]], started: float, ended: float, ready: float
) -> tuple[float, float, int]:
    """(audio s / wall s with start-up, steady audio s / wall s, units in the steady window).

    `units`: per unit, its audio seconds and its stage stats (`decode_started_at`, epoch s);
    `ready`: when the last stage was up. Steady counts units whose decode began at or after
    `ready`, over [ready, ended].
    """
    audio = sum(seconds for seconds, _ in units)
    steady = [seconds for seconds, stages in units if stages.decode_started_at >= ready]
    steady_rate = sum(steady) / (ended - ready) if steady else float("nan")
    return audio / (ended - started), steady_rate, len(steady)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=768)  # a run long enough for a steady state
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--per-shard", type=int, default=8)
    p.add_argument("--decode-cores", type=int, default=os.cpu_count())
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="losatok-feed-"))
    make_corpus(work / "corpus", args.files, args.seconds)
    cores = args.decode_cores
    config = TokenizeConfig(
        source=SourceConfig(path=str(work / "corpus")),
        sink=SinkConfig(path=str(work / "ds"), inputs_per_shard=args.per_shard),
        model=ModelConfig(preset="tiny"),
        cluster=ClusterConfig(num_cpus=cores + 1, max_failure_fraction=0.0),
    )
    units = make_units(list_inputs(config.source), args.per_shard, 1 << 40)
    paths = [item.location for unit in units for item in unit.items]

    import torch
    from torchcodec.decoders import AudioDecoder

    torch.set_num_threads(1)
    samples = {
        p: AudioDecoder(p, sample_rate=16_000, num_channels=1).get_all_samples().data.shape[1] for p in paths
    }
    audio = sum(samples.values()) / 16_000
    audio_of = {u.index: sum(samples[i.location] for i in u.items) / 16_000 for u in units}  # per unit
    start = time.perf_counter()
    for path in paths:
        AudioDecoder(path, sample_rate=16_000, num_channels=1).get_all_samples()
    torchcodec_rate = audio / (time.perf_counter() - start)
    start = time.perf_counter()
    for unit in units:
        segments, failures = decode_items(unit.items, config.segment, 16_000, {}, 1)
        pack_payload((unit, segments, failures, {}))
    stage_rate = audio / (time.perf_counter() - start)

    init_ray(config.cluster)
    plan_path = str(work / "plan-part.parquet")  # units reach decode tasks as plan references
    write_partition(fsspec.filesystem("file"), plan_path, units)
    rows = [{"unit": u.index, "plan": plan_path} for u in units]

    def decode_alone(rows: list[dict]) -> list[tuple[float, StageStats]]:
        ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            decode_stage,
            fn_kwargs=decode_arguments(config, 16_000),
            batch_size=1,
            num_cpus=1,
            compute=ray.data.TaskPoolStrategy(size=cores),
        )
        stats = []
        for row in ds.iter_rows():  # the stats only: the arrays are views, nothing is copied
            unit, *_, stages = unpack_payload(row["payload"])
            stats.append((audio_of[unit.index], stages))
        return stats

    decode_alone(rows[:cores])  # warm-up: worker processes started, torch and FFmpeg imported
    tokenizer = preset("tiny")
    pairs, busy = [], 0.0
    # Decode alone, then the pipeline, twice: each ratio is of two runs taken back to back, so
    # that load from other processes on a shared machine drifts less between them. The second
    # pipeline run finds Ray's workers warm; each starts its own actors.
    for attempt in range(2):
        start = time.time()
        stats = decode_alone(rows)
        end = time.time()
        alone = rates(stats, start, end, min(stages.decode_started_at for _, stages in stats))

        sink_config = replace(config.sink, path=f"{config.sink.path}-{attempt}")
        dataset = SinkDataset.open(sink_config, config.fields, tokenizer, run_identity(config, tokenizer))
        write_partition(dataset.layout.fs, dataset.layout.path("plan", "feed.parquet"), units)
        refs = [UnitRef(u.index, "plan/feed.parquet") for u in units]
        start = time.time()
        summaries = list(run_units(config, refs, dataset.committer(), 16_000, encode_stage=NullEncodeStage))
        end = time.time()
        ready = max(s.stages.encode_ready_at for s in summaries)
        moved = sum(s.audio_seconds for s in summaries)
        assert abs(moved - audio) < 1e-3 * audio, (moved, audio)
        busy = sum(s.stages.decode_seconds for s in summaries)
        units_run = [(s.audio_seconds, s.stages) for s in summaries]
        pairs.append((alone, rates(units_run, start, end, ready), ready - start, end - start))

    segments, _ = decode_items(units[0].items, config.segment, 16_000, {}, 1)
    unit_audio = sum(s.duration for s in segments)
    in_band = (lambda o: pickle.dumps(o, protocol=5), pickle.loads)
    costs = {
        f"{dtype.__name__}, {name}": payload_costs(segments, dtype, *packer)
        for dtype in (np.float32, np.int16)
        for name, packer in (("pickled in band", in_band), ("pack_payload", (pack_payload, unpack_payload)))
    }
    ray.shutdown()

    print(
        f"{len(paths)} wav files (16 kHz mono 16-bit), {audio:.0f} s of audio, {len(units)} units; {cores} decode cores"
    )
    print("| measurement | audio s / wall s, with start-up | per decode core | steady | per decode core |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| torchcodec, in-process, 1 thread | {torchcodec_rate:.0f} | {torchcodec_rate:.0f} | | |")
    print(f"| decode stage body, in-process, 1 thread | {stage_rate:.0f} | {stage_rate:.0f} | | |")
    for attempt, (alone, pipeline, _, _) in enumerate(pairs):
        for name, (whole, steady, _) in (
            ("decode stage alone, Ray tasks", alone),
            ("pipeline, no-work encoder", pipeline),
        ):
            print(
                f"| {name}, run {attempt + 1} | {whole:.0f} | {whole / cores:.0f} | {steady:.0f} | {steady / cores:.0f} |"
            )
    for attempt, (alone, pipeline, up, wall) in enumerate(pairs):
        print(
            f"run {attempt + 1}: pipeline / decode stage alone on Ray: steady {pipeline[1] / alone[1]:.2f}, "
            f"with start-up {pipeline[0] / alone[0]:.2f} (target >= 0.8); the pipeline took {wall:.1f} s, "
            f"its encode actor was up after {up:.1f} s, {pipeline[2]} of {len(units)} units decoded after that"
        )
    print(f"decode tasks were busy {busy:.1f} task-s in the last pipeline run")
    steady = max((p[1] for _, p, _, _ in pairs if p[2]), default=float("nan"))  # runs with a window
    alone = max(alone[1] for alone, _, _, _ in pairs)
    print(
        "decode cores to feed 10 000 audio s/s (one H100, official encoder, bf16), best runs: "
        f"{10_000 / (steady / cores):.1f} at the pipeline's steady rate, {10_000 / (alone / cores):.1f} at "
        "the decode stage alone's"
    )
    for name, (mib, seconds) in costs.items():
        print(
            f"payload {name}: {mib / unit_audio * 60:.2f} MiB per audio minute, pickle+put+get+unpickle "
            f"{seconds / unit_audio * 1000:.2f} ms per audio second"
        )
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
