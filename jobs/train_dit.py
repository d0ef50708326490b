"""`losatok-train-dit` (= `python -m jobs.train_dit`): train a DiT on a cached latent dataset.

    losatok-train-dit experiment=tiny data.path=demo/dataset
    losatok-train-dit experiment=tts data.path=s3://latents/ljspeech trainer.num_workers=8 trainer.use_gpu=true

Recipe: setup (data, model, EMA, optimizer, schedule, resume) -> train (flow matching, optional
semantic alignment, clipping, EMA, metrics, atomic checkpoints) -> cleanup. One process by
default; with trainer.num_workers > 1 the same loop runs on every worker of a Ray Train
TorchTrainer (DDP). A rerun with the same out_dir resumes from its latest checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import shlex
import time
import zlib
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import hydra
import torch
import torch.distributed as dist
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from jobs import checkpointing, parallel
from jobs.builders import build_dit
from jobs.data import Batch, DatasetMismatchError, DatasetSpec, Filters, LatentLoader, LoaderConfig
from jobs.launch import (
    absolute_paths,
    cli,
    config_from_hydra,
    entry,
    require,
    require_positive,
    run_workers,
    write_worker_result,
)
from jobs.relay import progress_bar
from jobs.tokenizer_ref import TokenizerSource, dataset_tokenizer
from jobs.training import AuditLog, MetricsLog, TrainerConfig, training_device, use_bf16
from jobs.usage import check_exists, check_output_dir
from losatok.dit import DiT, DiTConfig, dit_preset
from losatok.flow import flow_matching_loss
from losatok.text import encode_texts
from losatok_data.reader import open_dataset
from losatok_storage.filesystem import url_to_fs
from losatok_storage.retry import RetryPolicy
from losatok_storage.secrets import redact

log = logging.getLogger(__name__)


@dataclass
class OptimConfig:
    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 100  # linear warm-up, then cosine decay to `min_lr_ratio` x lr at max_steps
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    ema_decay: float = 0.999


@dataclass
class RetryConfig:
    # every storage call of the run (dataset reads, checkpoint reads and writes) retries a
    # transient error (losatok_storage.retry) with exponential backoff and jitter: `attempts` tries, the
    # first wait base_seconds, doubling, each at most max_seconds (defaults: ~60 s in all). Past
    # that the run stops (exit 1, one line); rerunning resumes from the last checkpoint
    attempts: int = 8
    base_seconds: float = 0.5
    max_seconds: float = 20.0
    stall_seconds: float = 120.0  # an attempt silent this long (+1 s per MiB moved) is retried

    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            attempts=self.attempts,
            base_delay=self.base_seconds,
            max_delay=self.max_seconds,
            stall_seconds=self.stall_seconds,
        )


@dataclass
class ValidationConfig:
    """Held-out data, scored every `every` steps with the flow-matching loss at fixed noise and
    times (drawn per sample from its key) and crops from the start: the same data, weights and
    config give the same number on every run, whatever the number of ranks."""

    path: str = ""  # a held-out dataset (or the training one, with filters that pick its held-out part)
    storage_options: dict[str, Any] = field(default_factory=dict)
    datasets: list[DatasetSpec] = field(default_factory=list)  # several held-out datasets instead
    filters: Filters = field(default_factory=Filters)  # e.g. {splits: [valid]} or {keys_file: heldout.txt}
    every: int = 0  # steps between evaluations (0: never)


@dataclass
class TrainDiTConfig:
    data: LoaderConfig = field(default_factory=LoaderConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    model: str = "tiny"  # DiT preset: tiny, small, base
    model_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {depth: 4}
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    out_dir: str = "out/dit"  # checkpoints/ (local or s3://), and metrics.jsonl + tensorboard/ when local
    storage_options: dict[str, Any] = field(default_factory=dict)  # fsspec options for an s3:// out_dir
    log_dir: str | None = None  # local folder for metrics; default: out_dir when it is local
    retry: RetryConfig = field(default_factory=RetryConfig)  # storage outages: how long to wait them out
    max_steps: int = 1000
    log_every: int = 10
    ckpt_every: int = 200
    cond_dropout: float = 0.1  # share of items trained without their text, for classifier-free guidance
    semantic_weight: float = 0.0  # weight of the semantic alignment loss (needs data.semantic_field)
    time_distribution: str = "logit_normal"
    seed: int = 0
    # a pretrained text encoder instead of the trainable byte-level one: "package.module:function",
    # called with text_encoder_path (e.g. a local folder of weights); frozen unless said otherwise
    text_encoder: str | None = None
    text_encoder_path: str | None = None
    freeze_text_encoder: bool = True
    # the tokenizer file that made the dataset, when it was made from one (the card keeps only its
    # sha256): recorded in the checkpoints so that losatok-generate decodes with it unasked
    tokenizer: TokenizerSource = field(default_factory=TokenizerSource)


def model_config(config: TrainDiTConfig, semantic_dim: int | None) -> DiTConfig:
    values = {**dit_preset(config.model).to_dict(), **config.model_overrides}
    if config.semantic_weight > 0:
        if values.get("semantic_align_layer") is None:  # default: the middle of the network
            values["semantic_align_layer"] = max(0, values["depth"] // 2 - 1)
        values["semantic_dim"] = semantic_dim
    return DiTConfig.from_dict(values)


def lr_factor(step: int, optim: OptimConfig, max_steps: int) -> float:
    """Linear warm-up over `warmup_steps`, then cosine from 1 down to `min_lr_ratio` at `max_steps`."""
    if step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    progress = min(1.0, (step - optim.warmup_steps) / max(1, max_steps - optim.warmup_steps))
    return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class Training:
    """What the train loop needs, made by `setup`; its position (`step`, and the loader's) and
    losses advance as `train` runs."""

    config: TrainDiTConfig
    rank: int
    distributed: bool  # a process group exists: this process is one DDP/FSDP worker
    sharded: bool  # FSDP: gathering state and weights is a collective every rank joins
    device: torch.device
    dit_config: DiTConfig
    batches: LatentLoader  # this rank's batches, with the epoch's exactly-once position
    tokenizer: dict[str, Any] | None  # the tokenizer that made the latents (rank 0 only): checkpointed
    model: DiT
    ema: AveragedModel
    train_model: nn.Module  # `model` wrapped for DDP or FSDP; `model` itself on one process
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    metrics: MetricsLog
    autocast: torch.autocast
    audit: AuditLog  # every batch's keys, per rank, when data.audit is set
    heldout: LatentLoader | None  # this rank's share of the validation data (None: no validation)
    step: int = 0  # optimizer steps taken
    first_loss: float | None = None
    last_loss: float | None = None


def train_loop(config: TrainDiTConfig) -> dict[str, Any]:
    """Setup -> train -> cleanup on this process (one worker of DDP when a process group exists)."""
    training = setup(config)
    train(training)
    return cleanup(training)


def setup(config: TrainDiTConfig) -> Training:
    """Data, model, EMA, optimizer, schedule and metrics, resumed from the latest checkpoint if any."""
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    device = training_device(config.trainer)
    torch.manual_seed(config.seed)
    dit_config = model_config(config, _semantic_dim(config))
    batches = LatentLoader(
        config.data, dit_config.latent_dim, rank, world, dit_config.semantic_dim, config.retry.policy()
    )
    # which tokenizer made the latents, for generation; checked before anything is written
    tokenizer = dataset_tokenizer(batches.batches.sources[0].reader, config.tokenizer) if rank == 0 else None
    model = build_dit(
        dit_config, config.text_encoder, config.text_encoder_path, config.freeze_text_encoder
    ).to(device)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.optim.ema_decay))
    sharded = distributed and config.trainer.strategy == "fsdp"
    train_model = parallel.distribute(model, ema, config.trainer.strategy, device) if distributed else model
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.optim.lr,
        betas=tuple(config.optim.betas),
        weight_decay=config.optim.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.optim, config.max_steps)
    )
    step = _resume(config, model, ema, optimizer, scheduler, sharded, batches)
    return Training(
        config=config,
        rank=rank,
        distributed=distributed,
        sharded=sharded,
        device=device,
        dit_config=dit_config,
        batches=batches,
        tokenizer=tokenizer,
        model=model,
        ema=ema,
        train_model=train_model,
        optimizer=optimizer,
        scheduler=scheduler,
        metrics=MetricsLog(config.log_dir or config.out_dir, rank == 0, step),
        audit=AuditLog(config.log_dir or config.out_dir, rank, world, step, config.data.audit),
        heldout=_heldout(config, batches, dit_config, rank, world),
        autocast=torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(config.trainer, device)),
        step=step,
    )


def _resume(
    config: TrainDiTConfig,
    model: DiT,
    ema: AveragedModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    sharded: bool,
    batches: LatentLoader,
) -> int:
    """Load the latest checkpoint, if any, into the model, EMA, optimizer, schedule, RNGs and the
    loader's position: the step to continue from (0 when there is none)."""
    resumed = checkpointing.load_latest(_ckpt_dir(config), config.storage_options, config.retry.policy())
    if resumed is None:
        return 0
    parallel.restore_state(model, ema, optimizer, resumed, sharded)
    scheduler.load_state_dict(resumed["scheduler"])
    step = resumed["step"]
    checkpointing.restore_rng(resumed["rng"])
    if "data" in resumed:
        batches.load_state_dict(resumed["data"])
    else:  # written before the loader kept a position: its epoch starts again
        log.warning(
            "checkpoint of step %d has no loader position: epoch %d starts afresh", step, resumed["epoch"]
        )
        batches.start_epoch(resumed["epoch"])
    log.info("resumed from step %d (epoch %d, %d batches of it to go)", step, batches.epoch, len(batches))
    return step


def train(training: Training) -> None:
    """Steps up to max_steps, epoch after epoch: metrics every log_every steps, a checkpoint every
    ckpt_every (and at the last step)."""
    config, batches = training.config, training.batches
    started, frames_seen, samples_seen = time.perf_counter(), 0, 0
    # a bar on a terminal; elsewhere (a file, a Ray Train worker) one line per log_every
    progress = progress_bar(config.max_steps, training.step, enabled=training.rank == 0)
    while training.step < config.max_steps:
        fresh, yielded = batches.at_epoch_start, 0
        for batch in batches:  # the rest of the loader's epoch; then it moves to the next
            yielded += 1
            losses, grad_norm = train_step(training, batch)
            training.step += 1
            step = training.step
            training.audit.write(step, batches.epoch, batch.keys)
            progress.update(1)
            loss_value = float(losses["loss"].detach())
            training.first_loss = loss_value if training.first_loss is None else training.first_loss
            training.last_loss = loss_value
            frames_seen += int(batch.mask.sum())
            samples_seen += len(batch.keys)
            if step % config.log_every == 0 or step == config.max_steps:
                lr = training.scheduler.get_last_lr()[0]
                progress.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", refresh=False)
                elapsed = time.perf_counter() - started
                seen = {f"samples/{name}": count for name, count in batches.samples_seen().items()}
                training.metrics.write(
                    step,
                    {
                        "loss": loss_value,
                        "flow_loss": float(losses["flow"].detach()),
                        "semantic_loss": float(losses["semantic"].detach()),
                        "grad_norm": float(grad_norm),
                        "lr": lr,
                        "samples_per_s": samples_seen / elapsed,
                        "frames_per_s": frames_seen / elapsed,
                        "epoch": batches.epoch,
                        **seen,
                    },
                )
            if training.heldout is not None and step % config.validation.every == 0:
                training.metrics.write(step, {"val_loss": validation_loss(training)})
            if step % config.ckpt_every == 0 or step == config.max_steps:
                save_checkpoint(training)
            if training.distributed and (step % config.ckpt_every == 0):
                dist.barrier()
            if step >= config.max_steps:
                break
        if fresh and not yielded:
            raise DatasetMismatchError(f"{config.data.path or 'data.datasets'}: the filters keep no sample")
    progress.close()


def train_step(training: Training, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One optimizer step on `batch` (flow matching, optional semantic alignment, clipping, EMA):
    its losses and the gradient norm before clipping. The noise is a function of the step, so a
    resumed run draws the same noise."""
    config, device = training.config, training.device
    generator = torch.Generator().manual_seed(
        config.seed * 1_000_003 + training.rank * 10_007 + training.step
    )
    ids, text_mask = encode_texts(batch.texts, training.dit_config.text_max_len)  # (B, L) each
    drop = torch.rand(len(batch.texts), generator=generator) < config.cond_dropout  # (B,)
    with training.autocast:
        losses = flow_matching_loss(
            training.train_model,
            batch.latents.to(device),
            batch.mask.to(device),
            ids.to(device),
            text_mask.to(device),
            drop_text=drop.to(device),
            semantic_target=None if batch.semantic is None else batch.semantic.to(device),
            semantic_weight=config.semantic_weight,
            time_distribution=config.time_distribution,
            generator=generator,
        )
    training.optimizer.zero_grad(set_to_none=True)
    (losses["loss"] * batch.weight).backward()  # weight 0: a padding batch that keeps the ranks in step
    grad_norm = torch.nn.utils.clip_grad_norm_(training.model.parameters(), config.optim.grad_clip)
    training.optimizer.step()
    training.scheduler.step()
    training.ema.update_parameters(training.model)
    return losses, grad_norm


def _heldout(
    config: TrainDiTConfig, batches: LatentLoader, dit_config: DiTConfig, rank: int, world: int
) -> LatentLoader | None:
    """This rank's share of the validation data, normalised as the training data is."""
    v = config.validation
    if v.every <= 0:
        return None
    data = replace(
        config.data,
        path=v.path,
        storage_options=v.storage_options,
        datasets=v.datasets,
        filters=v.filters,
        shards=None,
        generation=None,
        workers=0,
        audit=False,
        crop="start",
        cache_gb=0.0,
    )
    heldout = LatentLoader(
        data, dit_config.latent_dim, rank, world, dit_config.semantic_dim, config.retry.policy()
    )
    for source in heldout.batches.sources:  # the training data's normalisation: the model's space
        source.mean, source.std = batches.mean, batches.std
    return heldout


@torch.no_grad()
def validation_loss(training: Training) -> float:
    """The flow-matching loss over all the validation data (all ranks; a collective under DDP),
    with each sample's time and noise drawn from its key: a fixed number for fixed weights."""
    heldout, device = training.heldout, training.device
    heldout.start_epoch(0)  # always its first epoch: the same batches every time
    model = training.train_model
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # sum of squared error x frames, frames
    for batch in heldout:
        seeds = [zlib.crc32(key.encode()) for key in batch.keys] or [0] * len(batch.texts)
        draws = [torch.Generator().manual_seed(seed) for seed in seeds]
        t = torch.stack([torch.sigmoid(torch.randn((), generator=g)) for g in draws])
        noise = torch.stack([torch.randn(batch.latents.shape[1:], generator=g) for g in draws])
        ids, text_mask = encode_texts(batch.texts, training.dit_config.text_max_len)
        with training.autocast:
            losses = flow_matching_loss(
                model,
                batch.latents.to(device),
                batch.mask.to(device),
                ids.to(device),
                text_mask.to(device),
                t=t.to(device),
                noise=noise.to(device),
            )
        frames = float(batch.mask.sum()) * batch.weight  # padding batches count nothing
        total += torch.tensor([float(losses["flow"]) * frames, frames], dtype=torch.float64, device=device)
    model.train()
    if training.distributed:
        dist.all_reduce(total)
    return float(total[0] / total[1].clamp(min=1.0))


def save_checkpoint(training: Training) -> None:
    """Gather the full state and the loader's position (collectives: every rank calls this) and
    write them on rank 0."""
    state = parallel.gather_state(training.model, training.ema, training.optimizer, training.sharded)
    state["data"] = training.batches.state_dict()
    if training.rank == 0:
        _save(training, state)


def cleanup(training: Training) -> dict[str, Any]:
    """Close the metrics and report this worker's step, first and last loss and weights checksum."""
    training.metrics.close()
    training.audit.close()
    weights = parallel.full_weights(training.model, training.sharded)  # collective under FSDP
    checksum = float(sum(v.double().sum() for v in weights.values() if v.is_floating_point()))
    result = {
        "step": training.step,
        "first_loss": training.first_loss,
        "last_loss": training.last_loss,
        "param_checksum": checksum,
        "rank": training.rank,
    }
    write_worker_result(training.config.out_dir, result)
    return result


def _semantic_dim(config: TrainDiTConfig) -> int | None:
    if not config.data.semantic_field:
        return None
    first = config.data.specs()[0]
    card = open_dataset(first.path, first.storage_options, retry=config.retry.policy()).card
    return card.fields[config.data.semantic_field].frame_shape[0]


def _ckpt_dir(config: TrainDiTConfig) -> str:
    return f"{config.out_dir.rstrip('/')}/checkpoints"


def _save(training: Training, state: dict[str, Any]) -> None:
    config, batches = training.config, training.batches
    payload = {
        "format": "losatok-dit-checkpoint",
        "step": training.step,
        "epoch": batches.epoch,  # the loader's position ("data") says where in it
        **state,  # model, ema, optimizer: full (unsharded) state dicts; data: the loader's position
        "scheduler": training.scheduler.state_dict(),
        "rng": checkpointing.rng_state(),
        "dit_config": training.dit_config.to_dict(),
        "text_encoder": {"factory": config.text_encoder, "path": config.text_encoder_path},
        "tokenizer": training.tokenizer,  # which tokenizer made the latents (jobs.tokenizer_ref): generation decodes with it
        "train_config": json.dumps(redact(asdict(config)), default=str),  # no credentials in checkpoints
        # generation needs these to map samples back to the tokenizer's latent space
        "latent_mean": torch.from_numpy(batches.mean) if batches.mean is not None else None,
        "latent_std": torch.from_numpy(batches.std) if batches.std is not None else None,
        "latent_stats_by_dataset": batches.stats_by_dataset(),  # data.stats=per_dataset: each one's
        "data_stats": config.data.stats,
    }
    checkpointing.save(
        _ckpt_dir(config), training.step, payload, config.storage_options, config.retry.policy()
    )


def run(config: TrainDiTConfig) -> list[dict[str, Any]]:
    """Train in this process, or on `trainer.num_workers` Ray Train workers; one result per worker.

    Paths are made absolute here, on the driver, so outputs land where the user started the run
    whichever folder Ray Train runs its workers in.
    """
    config = absolute_paths(config, ["out_dir", "log_dir"], if_present=["text_encoder_path"])
    v = config.validation
    held = (
        LoaderConfig(path=v.path, datasets=v.datasets, filters=v.filters).absolute() if v.every > 0 else None
    )
    config = replace(
        config,
        data=config.data.absolute(),
        validation=replace(v, path=held.path, datasets=held.datasets, filters=held.filters) if held else v,
    )
    trainer = config.trainer
    return run_workers(
        train_loop,
        config,
        trainer.num_workers,
        trainer.use_gpu,
        trainer.address,
        config.out_dir,
        "dit",
        config.storage_options,
        trainer.cpus_per_worker,
    )


def validate(config: TrainDiTConfig) -> None:
    """Refuse, before any work, values that cannot run (one line naming the key; exit 2 in the CLI)."""
    data = config.data
    require(
        data.path not in ("", "???") or bool(data.datasets), "data.path", data.path, "name a latent dataset"
    )
    require(not (data.path and data.datasets), "data.path", data.path, "leave it empty with data.datasets")
    for i, spec in enumerate(data.specs()):
        check_exists(spec.path, "data.path" if not data.datasets else f"data.datasets[{i}].path")
        require(spec.weight > 0, f"data.datasets[{i}].weight", spec.weight, "must be above 0")
    require(data.stats in ("pooled", "per_dataset"), "data.stats", data.stats, "pooled or per_dataset")
    v = config.validation
    require(v.every >= 0, "validation.every", v.every, "must be 0 (never) or more")
    require(v.every == 0 or bool(v.path or v.datasets), "validation.path", v.path, "name held-out data")
    require_positive(
        config, "max_steps", "log_every", "ckpt_every", "optim.lr", "trainer.num_workers",
        "data.batch_frames", "data.max_frames", "data.shuffle_buffer",
    )  # fmt: skip
    require(config.data.workers >= 0, "data.workers", config.data.workers, "must be 0 or more")
    require_positive(config, "retry.attempts", "retry.base_seconds", "retry.max_seconds")
    require(0 <= config.cond_dropout < 1, "cond_dropout", config.cond_dropout, "must be in [0, 1)")
    require(config.semantic_weight >= 0, "semantic_weight", config.semantic_weight, "must be 0 or more")
    require(
        config.trainer.strategy in ("ddp", "fsdp"), "trainer.strategy", config.trainer.strategy, "ddp or fsdp"
    )
    check_exists(config.text_encoder_path, "text_encoder_path")
    check_exists(config.tokenizer.checkpoint, "tokenizer.checkpoint")
    check_exists(config.tokenizer.semantic_encoder, "tokenizer.semantic_encoder")
    check_output_dir(config.out_dir, "out_dir")
    if config.log_dir:
        check_output_dir(config.log_dir, "log_dir")


def next_steps(config: TrainDiTConfig) -> str:
    """Where the checkpoints are and the command that generates audio from them."""
    directory = _ckpt_dir(config)
    fs, root = url_to_fs(directory, config.storage_options)
    latest = f"{root}/{checkpointing.LATEST}"
    name = fs.cat_file(latest).decode().strip() if fs.exists(latest) else "none yet"
    command = f"losatok-generate --dit {shlex.quote(config.out_dir)}"
    if config.tokenizer.checkpoint is None:
        first = config.data.specs()[0]
        card = open_dataset(first.path, first.storage_options).card.tokenizer
        if card.checkpoint_sha256:  # made from a file the run was not told about: generation needs it
            command += " --tokenizer PATH/TO/THE/TOKENIZER.pth"
    return (
        f"checkpoints: {directory} (latest: {name})\n"
        f'generate:    {command} --text "Hello there." --out out/samples'
    )


def build_config(cfg: DictConfig | dict[str, Any]) -> TrainDiTConfig:
    """Hydra config -> TrainDiTConfig through OmegaConf's structured schema (unknown keys fail)."""
    return config_from_hydra(TrainDiTConfig, cfg)


# the dataclass is the schema of the YAML configs: every key exists with its default, and an
# unknown key or a wrongly typed value fails when Hydra composes the config
ConfigStore.instance().store(name="train_dit_schema", node=TrainDiTConfig)


@hydra.main(version_base=None, config_path="conf", config_name="train_dit")
def hydra_main(cfg: DictConfig) -> None:
    config = config_from_hydra(TrainDiTConfig, cfg)
    validate(config)
    cli(run, config, next_steps)


def main() -> None:
    entry("train_dit", TrainDiTConfig, run, hydra_main, validate, next_steps)


if __name__ == "__main__":
    main()
