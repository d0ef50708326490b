"""`losatok-train-tokenizer` (= `python -m jobs.train_tokenizer`): train the LoSATok tokenizer.

    losatok-train-tokenizer preset=tiny data.path=demo/corpus
    losatok-train-tokenizer preset=official data.path=/data/audio semantic_encoder=out/sembo/semantic_encoder.pth

The semantic encoder and SemBo stay frozen (from `semantic_encoder`, the file SemBo training
exports, or a seeded untrained one); the acoustic branch, fusion/VAE head and decoder train on
random crops of audio with: multi-resolution mel L1, least-squares adversarial losses from
multi-period and multi-resolution discriminators plus feature matching (from `disc_start_step`
on), the KL with a floor, and dual-level semantic supervision (both / high_only / low_only),
each weighted and logged on its own. The result, `<out_dir>/losatok.pth`, keeps the published
whole-model layout (`{"state_dict": ...}` with the published key names) and carries its config
beside it (`losatok.save_checkpoint`): eval, generation, reconstruction and the pipeline read the
config from the file, so no `preset=` is needed to use it, and strict published-layout loaders
still load it.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import hydra
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from jobs import checkpointing
from jobs.launch import (
    absolute_paths,
    average_gradients,
    barrier,
    cli,
    config_from_hydra,
    entry,
    rank_and_world,
    require,
    require_positive,
    run_workers,
    write_worker_result,
)
from jobs.training import MetricsLog, TrainerConfig, training_device, use_bf16
from jobs.usage import check_exists, check_output_dir
from losatok import LoSATok, load_semantic_encoder, preset, save_checkpoint
from losatok.audio import save_audio
from losatok.checkpoint import checkpoint_config
from losatok.config import PRESETS
from losatok.discriminators import (
    DiscriminatorConfig,
    Discriminators,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
    tiny_discriminators,
)
from losatok.losses import MultiResolutionMelLoss, kl_loss, semantic_supervision_loss
from losatok_data.manifest import iter_manifest
from losatok_input.decoder import AudioError, load_audio, probe_audio
from losatok_input.listing import iter_audio_files
from losatok_input.opening import open_tar
from losatok_input.rule import SkippedFiles, audio_samples, file_extension, iter_shard_samples
from losatok_storage.filesystem import url_to_fs
from losatok_storage.paths import is_url, resolve_relative

log = logging.getLogger(__name__)
MANIFEST_SUFFIXES = ("parquet", "jsonl", "ndjson", "csv")


@dataclass
class AudioDataConfig:
    path: str = ""  # a folder of audio files or WebDataset audio shards, or a manifest; local or s3://
    storage_options: dict[str, Any] = field(default_factory=dict)
    crop_seconds: float = 1.0  # training crops, rounded down to whole 640-sample tokens
    batch_size: int = 8


@dataclass
class LossWeights:
    mel: float = 45.0  # HiFi-GAN/Vocos weighting: reconstruction dominates early training
    adversarial: float = 1.0
    feature_matching: float = 2.0
    kl: float = 1e-4
    semantic: float = 1.0


@dataclass
class TrainTokenizerConfig:
    data: AudioDataConfig = field(default_factory=AudioDataConfig)
    preset: str = "tiny"
    # frozen encoder + SemBo (published layout; one from SemBo training carries its config, which
    # then wins over `preset`); None: seeded untrained
    semantic_encoder: str | None = None
    seed: int = 0
    semantic_mode: str = "both"  # dual-level supervision: both, high_only, low_only
    kl_floor: float = 1e-3
    weights: LossWeights = field(default_factory=LossWeights)
    disc_start_step: int = 1000  # the discriminators join once the mel loss has shaped the decoder
    lr: float = 2e-4
    betas: tuple[float, float] = (0.8, 0.99)
    max_steps: int = 1000
    log_every: int = 10
    ckpt_every: int = 200
    examples_every: int = 500  # reconstruction wavs for listening, under out_dir/examples
    out_dir: str = "out/tokenizer"
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # num_workers > 1: Ray Train


def recordings(
    config: AudioDataConfig, skipped: SkippedFiles | None = None
) -> Iterator[tuple[str, bytes | str, float | None, float | None]]:
    """(name, path or bytes, start, end) of every recording in a folder of audio files, a folder of
    WebDataset audio shards (`.tar`), or an input manifest (parquet/jsonl/csv).

    In a folder, what counts as audio is the pipeline's rule (`losatok_input.listing`: FFmpeg's
    audio extensions, other unknown files probed); files left out are counted in `skipped`.
    """
    if config.path.rsplit(".", 1)[-1].lower() in MANIFEST_SUFFIXES:
        for row in iter_manifest(config.path, config.storage_options):
            location = resolve_relative(row.location, config.path)
            yield location, _read(location, config.storage_options), row.start, row.end
        return
    if file_extension(config.path) == "tar":
        yield from tar_recordings(config.path, config.storage_options, skipped)
        return
    for listed in iter_audio_files(config.path, config.storage_options, tars=True, skipped=skipped):
        if listed.tar:
            yield from tar_recordings(listed.location, config.storage_options, skipped)
        else:
            yield listed.location, _read(listed.location, config.storage_options), None, None


def tar_recordings(
    location: str, storage_options: dict[str, Any], skipped: SkippedFiles | None
) -> Iterator[tuple[str, bytes, None, None]]:
    """The audio samples of one WebDataset tar, streamed, by the pipeline's rule
    (`audio_samples`); samples without audio and stray members go to `skipped`."""
    with open_tar(location, storage_options) as handle:
        samples = iter_shard_samples(handle, skipped, location)
        probe = lambda data: probe_audio(io.BytesIO(data))  # noqa: E731
        for key, extension, members in audio_samples(samples, location, skipped, probe):
            yield f"{location}#{key}.{extension}", members[extension], None, None


def _read(location: str, storage_options: dict[str, Any]) -> bytes | str:
    """A local file by its path (the decoder opens it); a remote one's bytes, fetched whole."""
    if not is_url(location):
        return location
    fs, path = url_to_fs(location, storage_options)
    return fs.cat_file(path)


class AudioCrops:
    """Random fixed-length crops of recordings (see `recordings`), drawn by a step-seeded generator.

    The recordings are decoded once and kept in memory (16 kHz float32: 230 MB per hour), which
    suits fine-tuning corpora; unreadable files are skipped with a warning.
    """

    def __init__(self, config: AudioDataConfig, sample_rate: int, samples_per_token: int) -> None:
        self.crop = max(1, int(config.crop_seconds * sample_rate) // samples_per_token) * samples_per_token
        self.batch_size = config.batch_size
        self.waves: list[torch.Tensor] = []
        self.skipped = SkippedFiles()
        for location, data, start, end in recordings(config, self.skipped):
            try:
                wave = load_audio(data, sample_rate, start=start, end=end, name=location)
            except AudioError as err:
                log.warning("skipping %s", err)
                continue
            if wave.numel() >= self.crop:
                self.waves.append(wave)
        if self.skipped.total:
            log.warning("%s", self.skipped.describe())
        if not self.waves:
            raise FileNotFoundError(
                f"no readable recording of at least {self.crop} samples under {config.path} "
                f"(audio: FFmpeg's audio extensions, other files probed; {self.skipped.describe()})"
            )

    def batch(self, step: int, seed: int) -> torch.Tensor:
        """(batch_size, crop) waveforms; the same step always gives the same crops."""
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
        rows = []
        for _ in range(self.batch_size):
            wave = self.waves[int(torch.randint(len(self.waves), (1,), generator=generator))]
            start = int(torch.randint(wave.numel() - self.crop + 1, (1,), generator=generator))
            rows.append(wave[start : start + self.crop])
        return torch.stack(rows)


def build_tokenizer(config: TrainTokenizerConfig) -> LoSATok:
    torch.manual_seed(config.seed)
    # a semantic_encoder.pth from SemBo training carries its tokenizer's config: it wins over `preset`
    stored = checkpoint_config(config.semantic_encoder) if config.semantic_encoder else None
    model = LoSATok(stored or preset(config.preset))
    if config.semantic_encoder:
        load_semantic_encoder(model, config.semantic_encoder)
    return model.train()


@dataclass
class Training:
    """What the train loop needs, made by `setup`; `step` and the logged rows advance as `train` runs."""

    config: TrainTokenizerConfig
    rank: int
    device: torch.device
    bf16: bool  # autocast; the mel front ends and the iSTFT run in float32 inside the model
    model: LoSATok
    trainable: list[torch.nn.Parameter]  # the acoustic branch, fusion/VAE head and decoder
    discriminators: Discriminators
    data: AudioCrops
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    mel_loss: MultiResolutionMelLoss
    metrics: MetricsLog
    step: int = 0  # optimizer steps taken
    first: dict[str, float] | None = None  # the first and the latest step's losses
    last: dict[str, float] | None = None


def train_loop(config: TrainTokenizerConfig) -> dict[str, Any]:
    """Setup -> train -> cleanup on this process (one worker of DDP when a process group exists)."""
    training = setup(config)
    train(training)
    return cleanup(training)


def setup(config: TrainTokenizerConfig) -> Training:
    """Tokenizer, discriminators, crops, optimizers and metrics, resumed from the latest checkpoint if any."""
    device = training_device(config.trainer)
    model = build_tokenizer(config).to(device)
    discriminators = Discriminators(
        tiny_discriminators() if model.config.preset == "tiny" else DiscriminatorConfig()
    ).to(device)
    data = AudioCrops(config.data, model.config.sample_rate, model.config.samples_per_token)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt_g = torch.optim.AdamW(trainable, lr=config.lr, betas=tuple(config.betas))
    opt_d = torch.optim.AdamW(discriminators.parameters(), lr=config.lr, betas=tuple(config.betas))
    mel_loss = MultiResolutionMelLoss(model.config.sample_rate).to(device)
    step = 0
    resumed = checkpointing.load_latest(f"{config.out_dir}/checkpoints")
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        discriminators.load_state_dict(resumed["discriminators"])
        opt_g.load_state_dict(resumed["opt_g"])
        opt_d.load_state_dict(resumed["opt_d"])
        step = resumed["step"]
        checkpointing.restore_rng(resumed["rng"])
        log.info("resumed from step %d", step)
    rank, _ = rank_and_world()
    return Training(
        config=config,
        rank=rank,
        device=device,
        bf16=use_bf16(config.trainer, device),
        model=model,
        trainable=trainable,
        discriminators=discriminators,
        data=data,
        opt_g=opt_g,
        opt_d=opt_d,
        mel_loss=mel_loss,
        metrics=MetricsLog(config.out_dir, rank == 0, step),
        step=step,
    )


def train(training: Training) -> None:
    """Steps up to max_steps: metrics every log_every steps, a reconstruction wav every
    examples_every and a checkpoint every ckpt_every (and both at the last step)."""
    config, rank = training.config, training.rank
    while training.step < config.max_steps:
        wav = training.data.batch(training.step, config.seed + 7919 * rank)  # each worker its own crops
        wav = wav.to(training.device)  # (B, S)
        row, audio = train_step(training, wav)
        training.step += 1
        step = training.step
        training.first = training.first or row
        training.last = row
        if step % config.log_every == 0 or step == config.max_steps:
            training.metrics.write(step, row)
        if rank == 0 and (step % config.examples_every == 0 or step == config.max_steps):
            os.makedirs(os.path.join(config.out_dir, "examples"), exist_ok=True)
            save_audio(
                os.path.join(config.out_dir, "examples", f"step-{step:07d}.wav"),
                audio[0].detach(),
                training.model.config.sample_rate,
            )
        if rank == 0 and (step % config.ckpt_every == 0 or step == config.max_steps):
            save_training_checkpoint(training)


def train_step(training: Training, wav: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
    """One step on (B, S) waveforms: the discriminators' (from disc_start_step on), then the
    generator's. Its losses, and the (B, S') reconstructed audio (S' <= S, whole tokens)."""
    config, model, discriminators = training.config, training.model, training.discriminators
    w = config.weights
    with torch.autocast(training.device.type, dtype=torch.bfloat16, enabled=training.bf16):
        f = model.features(wav)
        z = model.sample_posterior(f.mu, f.logvar)
        audio = model.dasheng_tokenizer.decode(z).float()  # (B, T x 640)
    wav = wav[..., : audio.shape[-1]]
    adversarial = training.step >= config.disc_start_step

    if adversarial:  # discriminator step on real vs (detached) reconstructed audio
        loss_d = discriminator_loss(discriminators(wav), discriminators(audio.detach()))
        training.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        average_gradients(discriminators.parameters())
        training.opt_d.step()

    terms = {
        "mel": training.mel_loss(wav, audio),
        "kl": kl_loss(f.mu, f.logvar, config.kl_floor),
    }
    supervision = semantic_supervision_loss(
        f.acoustic_high, f.semantic_high, f.acoustic_low, f.semantic_low, mode=config.semantic_mode
    )
    terms["semantic"] = supervision["total"]
    total = w.mel * terms["mel"] + w.kl * terms["kl"] + w.semantic * terms["semantic"]
    if adversarial:
        real, fake = discriminators(wav), discriminators(audio)
        terms["adversarial"] = generator_loss(fake)
        terms["feature_matching"] = feature_matching_loss(real, fake)
        total = total + w.adversarial * terms["adversarial"] + w.feature_matching * terms["feature_matching"]
    training.opt_g.zero_grad(set_to_none=True)
    total.backward()
    average_gradients(training.trainable)
    training.opt_g.step()

    row = {k: float(v.detach()) for k, v in terms.items()}
    row |= {
        "semantic_high": float(supervision["high"].detach()),
        "semantic_low": float(supervision["low"].detach()),
    }
    row |= {"total": float(total.detach())} | (
        {"discriminator": float(loss_d.detach())} if adversarial else {}
    )
    return row, audio


def save_training_checkpoint(training: Training) -> None:
    """Everything a restart needs to continue exactly: both models, both optimizers, the RNGs."""
    checkpointing.save(
        f"{training.config.out_dir}/checkpoints",
        training.step,
        {
            "step": training.step,
            "config": training.model.config.to_dict(),
            "model": training.model.state_dict(),
            "discriminators": training.discriminators.state_dict(),
            "opt_g": training.opt_g.state_dict(),
            "opt_d": training.opt_d.state_dict(),
            "rng": checkpointing.rng_state(),
        },
    )


def cleanup(training: Training) -> dict[str, Any]:
    """Close the metrics, export `<out_dir>/losatok.pth` (rank 0) and report this worker's run."""
    config, step = training.config, training.step
    training.metrics.close()
    export = os.path.join(config.out_dir, "losatok.pth")
    if training.rank == 0:  # config inside: every command rebuilds this model from the file alone
        extra = {"trained_by": "losatok-train-tokenizer", "step": step, "seed": config.seed}
        save_checkpoint(training.model, export, extra | {"semantic_encoder": config.semantic_encoder})
    checksum = float(sum(p.detach().double().sum() for p in training.trainable))
    result = {
        "step": step,
        "first": training.first,
        "last": training.last,
        "export": export,
        "param_checksum": checksum,
        "rank": training.rank,
    }
    write_worker_result(config.out_dir, result)
    barrier()
    return result


def run(config: TrainTokenizerConfig) -> list[dict[str, Any]]:
    config = absolute_paths(
        config, ["out_dir"], must_exist=["data.path", "semantic_encoder"]
    )  # Ray Train workers run elsewhere
    t = config.trainer
    return run_workers(train_loop, config, t.num_workers, t.use_gpu, t.address, config.out_dir, "tokenizer")


ConfigStore.instance().store(name="train_tokenizer_schema", node=TrainTokenizerConfig)


def validate(config: TrainTokenizerConfig) -> None:
    """Refuse, before any work, values that cannot run (one line naming the key; exit 2 in the CLI)."""
    require(config.data.path not in ("", "???"), "data.path", config.data.path, "name the training audio")
    check_exists(config.data.path, "data.path")
    require(config.preset in PRESETS, "preset", config.preset, f"one of {sorted(PRESETS)}")
    require(
        config.semantic_mode in ("both", "high_only", "low_only"),
        "semantic_mode",
        config.semantic_mode,
        "both, high_only or low_only",
    )
    require_positive(
        config, "max_steps", "log_every", "ckpt_every", "examples_every", "lr", "trainer.num_workers",
        "data.crop_seconds", "data.batch_size",
    )  # fmt: skip
    require(config.disc_start_step >= 0, "disc_start_step", config.disc_start_step, "must be 0 or more")
    check_exists(config.semantic_encoder, "semantic_encoder")
    check_output_dir(config.out_dir, "out_dir")


@hydra.main(version_base=None, config_path="conf", config_name="train_tokenizer")
def hydra_main(cfg: DictConfig) -> None:
    config = config_from_hydra(TrainTokenizerConfig, cfg)
    validate(config)
    cli(run, config)


def main() -> None:
    entry("train_tokenizer", TrainTokenizerConfig, run, hydra_main, validate)


if __name__ == "__main__":
    main()
