"""The pipeline against the loop a user writes instead: same files, same cores, one run.

    python bench/vs_loop.py [--small 3000] [--long 12] [--runs 2] [--skip-long] [--skip-small]
                            [--loop-batch 32] [--fixed] [--cpu] [--set KEY=VALUE ...]

Two corpora of 16 kHz mono 16-bit wav, cut from real audio made here (sox music and espeak-ng
speech, mixed so no two files are alike):
  small  --small files of 1 to 4 s (Common Voice, LibriSpeech, most TTS corpora look like this)
  long   --long files of 5 to 10 min
On each, in turns (loop, pipeline, loop, pipeline, ... --runs times), in audio s per wall s:
  loop      what stable-audio-tools' pre_encode.py does: a torch DataLoader whose workers (one
            per core) decode with torchcodec to 16 kHz mono, batches of --loop-batch files
            encoded in this process with the tiny tokenizer (`SegmentEncoder`, at most 600 s of
            audio a forward pass; a long file in 30 s pieces, as the pipeline's
            segment.max_seconds=30 cuts it), one .npy of latents per file
  pipeline  `losatok-tokenize` as a user runs it, in a fresh process (its start-up, Ray's and
            the model's, counted), into a dataset: plan, decode tasks, encode actor, commit
            actors, verify-ready shards, index, card
and the ratio pipeline / loop of the runs taken back to back (goal: >= 0.8 on small files,
>= 1.0 on long ones). Beside it, the pipeline's own timer (audio s over its summary's wall
time) and its steady rate: the audio of every shard after the first over the time from the
first shard's commit to the last one's (a shard's index fragment is its commit point; its
file's mtime says when), with the time from the command's start to that first commit. The
loop runs as a script in a fresh process, and its wall includes its start-up as the
pipeline's does (the interpreter, torch's import, the model's load, its workers' start).
--fixed adds both fixed costs: a run of 2 one-second files. --set passes an override to every
pipeline run (e.g. --set cluster.dashboard=true). After the table,
where each pipeline run's time went, from its run log's timeline: tokenize() began (the
command's imports and config), Ray up, planned, first decode, first encode, first and last
commit, the run log written (the finalise done), and when the command exited. With --cpu,
where its CPU time went: the command's processes and all their descendants sampled every
0.25 s, by role (bench/process_roles.py: driver, decode, encode, commit, ray (Ray's and Ray
Data's own processes), other (the reaper, workers never seen at work)). A decode task lasts
milliseconds on short files: a worker never sampled while it runs one counts as "other".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RATE = 16_000


def write_wav(path: Path, samples: np.ndarray) -> None:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(pcm.tobytes())


def source_audio(work: Path, seconds: float) -> np.ndarray:
    """`seconds` of real audio at 16 kHz mono: sox music and espeak-ng speech, end to end."""
    from losatok_input.decoder import load_audio
    from losatok_input.testing import synth_music, synth_speech

    words = "The loop a user writes decodes in its workers and encodes in its main process. " * 12
    speech = load_audio(synth_speech(work / "_speech.wav", words, sample_rate=22_050)).numpy()
    music = load_audio(synth_music(work / "_music.wav", seconds=60.0, sample_rate=44_100, channels=1)).numpy()
    whole = np.concatenate([speech, music])
    return np.tile(whole, int(np.ceil(seconds * RATE / len(whole))))[: int(seconds * RATE)]


def make_corpus(root: Path, count: int, low: float, high: float, rng: np.random.Generator) -> float:
    """`count` files of `low` to `high` seconds cut at random places; returns their audio seconds."""
    root.mkdir(parents=True)
    lengths = rng.uniform(low, high, count)
    audio = source_audio(root, max(120.0, high * 2))
    for i, seconds in enumerate(lengths):
        n = int(seconds * RATE)
        start = int(rng.integers(0, len(audio) - n))
        gain = rng.uniform(0.3, 0.9)  # every file differs, also from a copy of the same cut
        write_wav(root / f"clip_{i:05d}.wav", audio[start : start + n] * gain)
    for path in root.glob("_*"):
        path.unlink()
    return float(sum(int(s * RATE) for s in lengths) / RATE)


def loop_process(corpus: Path, out: Path, workers: int, batch: int) -> float:
    """The user's loop as a user runs it, a script in a fresh process; its wall seconds, from
    the process's start (the interpreter, torch's import) to its exit."""
    command = [sys.executable, __file__, "--loop-in", str(corpus), str(out)]
    command += ["--cores", str(workers), "--loop-batch", str(batch)]
    started = time.perf_counter()
    subprocess.run(command, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    return time.perf_counter() - started


def run_loop(corpus: Path, out: Path, workers: int, batch: int = 32, piece_seconds: float = 30.0) -> float:
    """The user's loop, in this process; returns its wall seconds (the model's load included)."""
    import torch
    from torch.utils.data import DataLoader
    from torchcodec.decoders import AudioDecoder

    from pipelines.config import FieldsConfig, ModelConfig
    from pipelines.encode import SegmentEncoder

    class Files(torch.utils.data.Dataset):
        def __init__(self, paths: list[Path]) -> None:
            self.paths = paths

        def __len__(self) -> int:
            return len(self.paths)

        def __getitem__(self, i: int) -> tuple[str, np.ndarray]:
            decoded = AudioDecoder(str(self.paths[i]), sample_rate=RATE, num_channels=1).get_all_samples()
            return self.paths[i].stem, decoded.data[0].numpy()

    started = time.perf_counter()
    out.mkdir(parents=True)
    encoder = SegmentEncoder(ModelConfig(preset="tiny", seed=0), FieldsConfig(), max_frames=25 * 600)
    loader = DataLoader(
        Files(sorted(corpus.glob("*.wav"))), batch_size=batch, num_workers=workers, collate_fn=list
    )
    piece = int(piece_seconds * RATE)
    for files in loader:
        pieces = [(name, wav[i : i + piece]) for name, wav in files for i in range(0, len(wav), piece)]
        results = encoder.encode([wav for _, wav in pieces])
        latents: dict[str, list[np.ndarray]] = {}
        for (name, _), result in zip(pieces, results, strict=True):
            latents.setdefault(name, []).append(result.arrays["latent"])
        for name, parts in latents.items():
            np.save(out / f"{name}.npy", np.concatenate(parts))
    return time.perf_counter() - started


class CpuSampler(threading.Thread):
    """CPU seconds (user + system) of a process and all its descendants, by role
    (`process_roles.role_of`: a worker counts as what it last ran, from its start to its end),
    sampled every `every` s: a process that ends between samples loses at most its last `every` s."""

    def __init__(self, root: int, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.root, self.every = root, every
        self.seen: dict[int, float] = {}  # pid -> CPU seconds so far
        self.roles: dict[int, str] = {}  # pid -> its last role: an idle worker keeps it
        self.done = threading.Event()

    def run(self) -> None:
        import psutil
        from process_roles import role_of  # bench/: this script's folder

        while not self.done.is_set():
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(self.root)
                for process in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        title = " ".join(process.cmdline()).strip()
                        times = process.cpu_times()
                        before = self.roles.get(process.pid, "other")
                        role = (role_of(process, title, self.root, self.roles) if title else None) or before
                        self.roles[process.pid] = role
                        self.seen[process.pid] = times.user + times.system
            self.done.wait(self.every)

    def by_role(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for pid, seconds in self.seen.items():
            totals[self.roles[pid]] = totals.get(self.roles[pid], 0.0) + seconds
        return dict(sorted(totals.items(), key=lambda item: -item[1]))


def run_pipeline(
    corpus: Path, sink: Path, cores: int, cpu: bool = False, overrides: tuple[str, ...] = ()
) -> tuple[float, dict[str, Any]]:
    """`losatok-tokenize` in a fresh process; (wall seconds, what its summary line and run log
    report); with `cpu`, also the CPU seconds of its processes by role (CpuSampler)."""
    import pyarrow.parquet as pq  # here: the loop's process (this script too) should not import it

    command = [
        str(Path(sys.executable).with_name("losatok-tokenize")),
        f"source.path={corpus}",
        f"sink.path={sink}",
        "sink.inputs_per_shard=64",
        f"cluster.num_cpus={cores}",
        "cluster.max_failure_fraction=0",
        *overrides,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    started, started_at = time.perf_counter(), time.time()
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as run:
        sampler = CpuSampler(run.pid) if cpu else None
        if sampler:
            sampler.start()
        stdout, stderr = run.communicate()
        if sampler:
            sampler.done.set()
    wall = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(f"losatok-tokenize failed ({run.returncode}):\n{stderr[-3000:]}")
    found = re.search(
        r"([\d.]+) h of audio in ([\d.]+) s .* encode actors busy (\d+) % of the run, decode ([\d.]+) task-s",
        stdout,
    )
    if found is None:
        raise SystemExit(f"no summary line in losatok-tokenize's output:\n{stdout[-3000:]}")
    hours, seconds, busy, decode = (float(g) for g in found.groups())
    (log,) = (sink / "runs").glob("*.json")  # the run log: where the run's time went (RunSummary.timeline)
    run_log = json.loads(log.read_text())
    timeline = {"tokenize() began": run_log["started_at"] - started_at}  # the command's imports and config
    timeline |= {event: at + timeline["tokenize() began"] for event, at in run_log["timeline"].items()}
    timeline["run log written"] = timeline["tokenize() began"] + run_log["wall_seconds"]
    timeline = dict(sorted(timeline.items(), key=lambda event: event[1]))
    # steady state, from the dataset itself: each shard's index fragment is its commit point,
    # written when the shard is done; the audio of the shards after the first over the time
    # from the first commit to the last (start-up is the time to the first)
    commits = sorted(
        (path.stat().st_mtime, float(pq.read_table(path, columns=["duration"]).column(0).to_numpy().sum()))
        for path in (sink / "index").rglob("*.parquet")
    )
    span = commits[-1][0] - commits[0][0]
    steady = sum(audio for _, audio in commits[1:]) / span if len(commits) > 1 and span > 0 else float("nan")
    return wall, {
        "audio": hours * 3600,
        "seconds": seconds,
        "encode_busy": busy,
        "decode_task_s": decode,
        "steady": steady,
        "first_commit": commits[0][0] - started_at,
        "timeline": timeline,
        "cpu": sampler.by_role() if sampler else {},
    }


def where_time_went(label: str, wall: float, summary: dict[str, Any], cores: int) -> list[str]:
    """A pipeline run's timeline, and with --cpu its CPU seconds by role, as lines."""
    events = ", ".join(f"{event} {at:.1f}" for event, at in summary["timeline"].items())
    lines = [f"- {label}: {events}; exited {wall:.1f}"]
    if summary["cpu"]:
        spent = ", ".join(f"{role} {seconds:.1f}" for role, seconds in summary["cpu"].items())
        total = sum(summary["cpu"].values())
        lines.append(f"  CPU s by role ({total:.1f} in all, of {wall * cores:.0f} core-s): {spent}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", type=int, default=3000, help="files of 1 to 4 s")
    p.add_argument("--long", type=int, default=12, help="files of 5 to 10 min")
    p.add_argument("--runs", type=int, default=2, help="loop/pipeline pairs per corpus")
    p.add_argument("--loop-batch", type=int, default=32, help="files per batch in the loop")
    p.add_argument("--cpu", action="store_true", help="also where each pipeline run's CPU time went")
    p.add_argument("--cores", type=int, default=os.cpu_count())
    p.add_argument("--skip-small", action="store_true")
    p.add_argument("--skip-long", action="store_true")
    p.add_argument("--fixed", action="store_true", help="also the pipeline's fixed cost: a run of 2 files")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a pipeline override")
    p.add_argument("--loop-in", nargs=2, metavar=("CORPUS", "OUT"), help=argparse.SUPPRESS)  # loop_process
    args = p.parse_args()
    if args.loop_in:
        run_loop(Path(args.loop_in[0]), Path(args.loop_in[1]), args.cores, args.loop_batch)
        return
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="losatok-vs-loop-"))
    corpora = []
    if not args.skip_small:
        corpora.append(("small", args.small, 1.0, 4.0))
    if not args.skip_long:
        corpora.append(("long", args.long, 300.0, 600.0))
    print(
        f"{args.cores} cores; tiny tokenizer on CPU; runs alternate loop (batches of {args.loop_batch} files), "
        "pipeline"
    )
    print(
        "| corpus | run | loop audio s/s | pipeline audio s/s (wall) | pipeline, own timer "
        "| pipeline steady (first commit at) | pipeline / loop | steady / loop |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    timelines = []
    for name, count, low, high in corpora:
        corpus = work / name
        audio = make_corpus(corpus, count, low, high, rng)
        for run in range(args.runs):
            loop_wall = loop_process(corpus, work / f"{name}-npy-{run}", args.cores, args.loop_batch)
            wall, summary = run_pipeline(corpus, work / f"{name}-ds-{run}", args.cores, args.cpu, args.set)
            own = summary["audio"] / summary["seconds"]
            loop = audio / loop_wall
            print(
                f"| {name}: {count} files, {audio / 3600:.2f} h | {run + 1} | {loop:.0f} "
                f"| {audio / wall:.0f} | {own:.0f} (encode busy {summary['encode_busy']:.0f} %, decode "
                f"{summary['decode_task_s']:.1f} task-s) | {summary['steady']:.0f} ({summary['first_commit']:.1f} s) "
                f"| {(audio / wall) / loop:.2f} | {summary['steady'] / loop:.2f} |",
                flush=True,
            )
            timelines += where_time_went(f"{name}, run {run + 1}", wall, summary, args.cores)
    if args.fixed:  # what a run costs whatever its corpus: Ray, Ray Data, the model, the finalise
        make_corpus(work / "fixed", 2, 1.0, 1.5, rng)
        wall, summary = run_pipeline(work / "fixed", work / "fixed-ds", args.cores, args.cpu, args.set)
        loop_wall = loop_process(work / "fixed", work / "fixed-npy", args.cores, args.loop_batch)
        print(f"\nFixed costs, a run of 2 files of 1 to 1.5 s: pipeline {wall:.1f} s, loop {loop_wall:.1f} s")
        timelines += where_time_went("fixed cost", wall, summary, args.cores)
    print("\nWhere each pipeline run's time went, s from the command's start (its run log's timeline):")
    for line in timelines:
        print(line)
    print(f"work folder (delete when done): {work}")


if __name__ == "__main__":
    main()
