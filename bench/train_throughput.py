"""DiT training throughput on cached latents, the loader alone, and training fed by on-the-fly encoding.

    python bench/train_throughput.py [--files 16] [--seconds 10] [--steps 20]

Makes a corpus of real audio, tokenizes it once with the pipeline (tiny tokenizer), then in one
run measures: the loader alone (batches/s, latent frames/s); training steps/s and frames/s for
the tiny and small DiT presets on the cached latents; and the same small-DiT training fed by
encoding the audio on the fly with the tokenizer (tiny and official widths; random weights
serve, speed does not depend on them). Reports loader/training and cached/on-the-fly ratios.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray on loopback

import torch  # noqa: E402
from pipeline_throughput import make_corpus  # noqa: E402

from jobs.data import LatentLoader, LoaderConfig  # noqa: E402
from jobs.train_dit import TrainDiTConfig, model_config  # noqa: E402
from losatok import LoSATok, collate_waveforms, preset  # noqa: E402
from losatok.dit import DiT  # noqa: E402
from losatok.flow import flow_matching_loss  # noqa: E402
from losatok.text import encode_texts  # noqa: E402
from losatok_input.decoder import load_audio
from pipelines.config import ClusterConfig, ModelConfig, SinkConfig, SourceConfig, TokenizeConfig  # noqa: E402
from pipelines.run import tokenize  # noqa: E402

FRAMES_PER_BATCH = 25 * 60  # one minute of audio per batch
MAX_FRAMES = 250  # 10 s crops


def loader_config(path: str) -> LoaderConfig:
    return LoaderConfig(
        path=path, batch_frames=FRAMES_PER_BATCH, max_frames=MAX_FRAMES, shuffle_buffer=16, normalize=False
    )


def time_loader(path: str, steps: int) -> tuple[float, float]:
    batches = LatentLoader(loader_config(path), latent_dim=16)
    frames, count, start = 0, 0, time.perf_counter()
    while count < steps:
        for batch in batches:
            frames += int(batch.mask.sum())
            count += 1
            if count >= steps:
                break
    wall = time.perf_counter() - start
    return count / wall, frames / wall


def step_fn(model: DiT, optimizer: torch.optim.Optimizer, latents, mask, texts) -> None:
    ids, text_mask = encode_texts(texts, model.config.text_max_len)
    loss = flow_matching_loss(model, latents, mask, ids, text_mask)["loss"]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def time_cached(path: str, preset_name: str, steps: int) -> tuple[float, float]:
    config = TrainDiTConfig(data=loader_config(path), model=preset_name, model_overrides={"latent_dim": 16})
    model = DiT(model_config(config, None))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = LatentLoader(config.data, latent_dim=16)
    frames, count, start = 0, 0, None
    while count < steps + 1:
        for batch in batches:
            step_fn(model, optimizer, batch.latents, batch.mask, batch.texts)
            if start is None:  # first step is warm-up
                start = time.perf_counter()
            else:
                frames += int(batch.mask.sum())
            count += 1
            if count >= steps + 1:
                break
    wall = time.perf_counter() - start
    return steps / wall, frames / wall


def time_on_the_fly(files: list[Path], tokenizer_preset: str, steps: int) -> tuple[float, float]:
    """Each step decodes one minute of audio files, encodes them, then takes the same DiT step."""
    tokenizer = LoSATok(preset(tokenizer_preset)).eval()
    config = TrainDiTConfig(model="small", model_overrides={"latent_dim": tokenizer.config.latent_dim})
    model = DiT(model_config(config, None))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    frames, start = 0, None
    for step in range(steps + 1):
        waves, total = [], 0
        while total < FRAMES_PER_BATCH * 640:
            wave = load_audio(files[(step * 7 + len(waves)) % len(files)])[: MAX_FRAMES * 640]
            waves.append(wave)
            total += wave.numel()
        wav, lengths = collate_waveforms(waves)
        encoded = tokenizer.encode(wav, lengths)
        mask = torch.arange(encoded.z.shape[1])[None] < encoded.frames[:, None]
        step_fn(model, optimizer, encoded.z, mask, [""] * len(waves))
        if start is None:
            start = time.perf_counter()
        else:
            frames += int(mask.sum())
    wall = time.perf_counter() - start
    return steps / wall, frames / wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument(
        "--skip-official", action="store_true", help="leave out on-the-fly encoding with official widths"
    )
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="losatok-train-bench-"))
    make_corpus(work / "corpus", args.files, args.seconds)
    dataset = str(work / "latents")
    summary = tokenize(
        TokenizeConfig(
            source=SourceConfig(path=str(work / "corpus")),
            sink=SinkConfig(path=dataset, inputs_per_shard=4),
            model=ModelConfig(preset="tiny"),
            cluster=ClusterConfig(max_failure_fraction=0.0),
        )
    )
    assert summary.ok
    torch.manual_seed(0)
    print(
        f"dataset: {summary.audio_seconds:.0f} s of audio; batches of {FRAMES_PER_BATCH} frames; {torch.get_num_threads()} threads"
    )
    loader = time_loader(dataset, args.steps * 3)
    print(f"  loader alone                 {loader[0]:8.2f} batches/s {loader[1]:10.0f} frames/s")
    cached = {}
    for name in ("tiny", "small"):
        cached[name] = time_cached(dataset, name, args.steps)
        print(
            f"  train {name:<5} cached latents  {cached[name][0]:8.2f} steps/s   {cached[name][1]:10.0f} frames/s"
            f"   loader / train = {loader[0] / cached[name][0]:.1f}x"
        )
    files = sorted((work / "corpus").iterdir())
    for tok in ("tiny",) + (() if args.skip_official else ("official",)):
        fly = time_on_the_fly(files, tok, max(2, args.steps // 5))
        print(
            f"  train small, on-the-fly {tok:<8} {fly[0]:8.2f} steps/s   {fly[1]:10.0f} frames/s"
            f"   cached speed-up = {cached['small'][0] / fly[0]:.1f}x"
        )


if __name__ == "__main__":
    main()
