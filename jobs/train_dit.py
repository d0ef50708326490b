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
import os
import shlex
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import hydra
import torch
import torch.distributed as dist
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from jobs import checkpointing, parallel
from jobs.data import LatentBatches, LoaderConfig, make_loader
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
from jobs.usage import check_exists, check_output_dir
from losatok.dit import DiT, DiTConfig, dit_preset
from losatok.flow import flow_matching_loss
from losatok.text import encode_texts, load_text_encoder
from losatok_data.reader import open_dataset
from losatok_storage.filesystem import url_to_fs
from losatok_storage.paths import is_url
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
class TrainerConfig:
    num_workers: int = 1  # >1: Ray Train TorchTrainer with that many DDP workers
    use_gpu: bool = False
    address: str | None = None  # Ray cluster to join; None starts a local one when workers > 1
    strategy: str = "ddp"  # "ddp" replicates the model; "fsdp" shards it (models too large to replicate)
    bf16: bool | None = None  # autocast on CUDA by default


@dataclass
class RetryConfig:
    # every storage call of the run (dataset reads, checkpoint reads and writes) retries a
    # transient error (losatok_storage.retry) with exponential backoff and jitter: `attempts` tries, the
    # first wait base_seconds, doubling, each at most max_seconds (defaults: ~60 s in all). Past
    # that the run stops (exit 1, one line); rerunning resumes from the last checkpoint
    attempts: int = 8
    base_seconds: float = 0.5
    max_seconds: float = 20.0

    def policy(self) -> RetryPolicy:
        return RetryPolicy(attempts=self.attempts, base_delay=self.base_seconds, max_delay=self.max_seconds)


@dataclass
class TrainDiTConfig:
    data: LoaderConfig = field(default_factory=LoaderConfig)
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


class MetricsLog:
    """metrics.jsonl (appended, survives restarts) and TensorBoard, written by rank 0 only.

    A run resumed from the checkpoint of step `resumed_step` replays the steps after it, so
    their rows (written before the kill) are dropped first: every step appears once.
    """

    def __init__(self, out_dir: str, enabled: bool, resumed_step: int = 0) -> None:
        self.enabled = enabled and not is_url(out_dir)
        if enabled and not self.enabled:
            log.warning(
                "metrics are written to a local folder; set log_dir to keep them (out_dir is %s)", out_dir
            )
        if self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            os.makedirs(out_dir, exist_ok=True)
            path = os.path.join(out_dir, "metrics.jsonl")
            drop_rows_after(path, resumed_step)
            self.jsonl = open(path, "a")  # noqa: SIM115
            # TensorBoard's own resume rule: events from purge_step on are discarded
            self.board = SummaryWriter(
                os.path.join(out_dir, "tensorboard"), purge_step=resumed_step + 1 if resumed_step else None
            )

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self.jsonl.flush()
        for name, value in values.items():
            self.board.add_scalar(name, value, step)

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.board.close()


def drop_rows_after(path: str, step: int) -> None:
    """Rewrite the metrics file at `path` (atomically) without rows past `step` or torn lines."""
    if not os.path.exists(path):
        return
    kept, dropped = [], 0
    with open(path) as handle:
        for line in handle:
            try:
                keep = json.loads(line)["step"] <= step
            except (ValueError, KeyError, TypeError):  # the torn last line of a killed run
                keep = False
            kept += [line] if keep else []
            dropped += not keep
    if dropped:
        with open(path + ".tmp", "w") as handle:
            handle.writelines(kept)
        os.replace(path + ".tmp", path)


def train_loop(config: TrainDiTConfig) -> dict[str, Any]:
    """Setup -> train -> cleanup on this process (one worker of DDP when a process group exists)."""
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if torch.cuda.is_available() and config.trainer.use_gpu
        else torch.device("cpu")
    )
    torch.manual_seed(config.seed)

    # --- setup -------------------------------------------------------------------------------
    dit_config = model_config(config, _semantic_dim(config))
    batches = LatentBatches(
        config.data, dit_config.latent_dim, rank, world, dit_config.semantic_dim, config.retry.policy()
    )
    # which tokenizer made the latents, for generation; checked before anything is written
    tokenizer = dataset_tokenizer(batches.reader, config.tokenizer) if rank == 0 else None
    model = build_dit(
        dit_config, config.text_encoder, config.text_encoder_path, config.freeze_text_encoder
    ).to(device)
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.optim.ema_decay)
    )
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
    step, epoch, skip = 0, 0, 0
    resumed = checkpointing.load_latest(_ckpt_dir(config), config.storage_options, config.retry.policy())
    if resumed is not None:
        parallel.restore_state(model, ema, optimizer, resumed, sharded)
        scheduler.load_state_dict(resumed["scheduler"])
        step, epoch, skip = resumed["step"], resumed["epoch"], resumed["batch_in_epoch"]
        checkpointing.restore_rng(resumed["rng"])
        log.info("resumed from step %d (epoch %d, batch %d)", step, epoch, skip)
    metrics = MetricsLog(config.log_dir or config.out_dir, rank == 0, step)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=_bf16(config, device))

    def generator_at(
        at: int,
    ) -> torch.Generator:  # a function of the step: a resumed run draws the same noise
        return torch.Generator().manual_seed(config.seed * 1_000_003 + rank * 10_007 + at)

    # --- train -------------------------------------------------------------------------------
    first_loss = last_loss = None
    started, frames_seen, samples_seen = time.perf_counter(), 0, 0
    # a bar on a terminal; elsewhere (a file, a Ray Train worker) one line per log_every
    progress = progress_bar(config.max_steps, step, enabled=rank == 0)
    loader = make_loader(batches)
    while step < config.max_steps:
        batches.epoch = epoch  # the loader's shuffle is a function of (seed, rank, epoch[, worker])
        count = len(batches)  # this epoch's batches (iterating advances batches.epoch)
        for index, batch in enumerate(loader):
            if index < skip:  # resuming mid-epoch: replay the epoch's order up to where it stopped
                continue
            if step >= config.max_steps:
                break
            generator = generator_at(step)
            x1 = batch.latents.to(device)
            mask = batch.mask.to(device)
            ids, text_mask = encode_texts(batch.texts, dit_config.text_max_len)
            drop = torch.rand(len(batch.texts), generator=generator) < config.cond_dropout
            with autocast:
                losses = flow_matching_loss(
                    train_model,
                    x1,
                    mask,
                    ids.to(device),
                    text_mask.to(device),
                    drop_text=drop.to(device),
                    semantic_target=None if batch.semantic is None else batch.semantic.to(device),
                    semantic_weight=config.semantic_weight,
                    time_distribution=config.time_distribution,
                    generator=generator,
                )
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
            optimizer.step()
            scheduler.step()
            ema.update_parameters(model)
            step += 1
            progress.update(1)
            loss_value = float(losses["loss"].detach())
            first_loss = loss_value if first_loss is None else first_loss
            last_loss = loss_value
            frames_seen += int(mask.sum())
            samples_seen += len(batch.keys)
            if step % config.log_every == 0 or step == config.max_steps:
                progress.set_postfix(
                    loss=f"{loss_value:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}", refresh=False
                )
                elapsed = time.perf_counter() - started
                metrics.write(
                    step,
                    {
                        "loss": loss_value,
                        "flow_loss": float(losses["flow"].detach()),
                        "semantic_loss": float(losses["semantic"].detach()),
                        "grad_norm": float(grad_norm),
                        "lr": scheduler.get_last_lr()[0],
                        "samples_per_s": samples_seen / elapsed,
                        "frames_per_s": frames_seen / elapsed,
                    },
                )
            if step % config.ckpt_every == 0 or step == config.max_steps:
                state = parallel.gather_state(model, ema, optimizer, sharded)  # collective under FSDP
                if rank == 0:
                    position = (epoch, index + 1) if index + 1 < count else (epoch + 1, 0)
                    _save(config, step, position, state, scheduler, dit_config, batches, tokenizer)
            if distributed and (step % config.ckpt_every == 0):
                dist.barrier()
        else:
            epoch, skip = epoch + 1, 0

    # --- cleanup -------------------------------------------------------------------------------
    progress.close()
    metrics.close()
    weights = parallel.full_weights(model, sharded)  # collective under FSDP
    checksum = float(sum(v.double().sum() for v in weights.values() if v.is_floating_point()))
    result = {
        "step": step,
        "first_loss": first_loss,
        "last_loss": last_loss,
        "param_checksum": checksum,
        "rank": rank,
    }
    write_worker_result(config.out_dir, result)
    return result


def build_dit(config: DiTConfig, factory: str | None, path: str | None, freeze: bool = True) -> DiT:
    """The DiT with its default byte-level text encoder, or with a pretrained one from `factory`."""
    if factory is None:
        return DiT(config)
    encoder = load_text_encoder(factory, path)
    if freeze:
        encoder.requires_grad_(False)
    return DiT(config, text_encoder=encoder)


def _semantic_dim(config: TrainDiTConfig) -> int | None:
    if not config.data.semantic_field:
        return None
    card = open_dataset(config.data.path, config.data.storage_options, retry=config.retry.policy()).card
    return card.fields[config.data.semantic_field].frame_shape[0]


def _bf16(config: TrainDiTConfig, device: torch.device) -> bool:
    return device.type == "cuda" if config.trainer.bf16 is None else config.trainer.bf16


def _ckpt_dir(config: TrainDiTConfig) -> str:
    return f"{config.out_dir.rstrip('/')}/checkpoints"


def _save(config, step, position, state, scheduler, dit_config, batches, tokenizer) -> None:
    payload = {
        "format": "losatok-dit-checkpoint",
        "step": step,
        "epoch": position[0],  # where the next batch comes from: epoch and index within it
        "batch_in_epoch": position[1],
        **state,  # model, ema, optimizer: full (unsharded) state dicts
        "scheduler": scheduler.state_dict(),
        "rng": checkpointing.rng_state(),
        "dit_config": dit_config.to_dict(),
        "text_encoder": {"factory": config.text_encoder, "path": config.text_encoder_path},
        "tokenizer": tokenizer,  # which tokenizer made the latents (jobs.tokenizer_ref): generation decodes with it
        "train_config": json.dumps(redact(asdict(config)), default=str),  # no credentials in checkpoints
        # generation needs these to map samples back to the tokenizer's latent space
        "latent_mean": torch.from_numpy(batches.mean) if batches.mean is not None else None,
        "latent_std": torch.from_numpy(batches.std) if batches.std is not None else None,
    }
    checkpointing.save(_ckpt_dir(config), step, payload, config.storage_options, config.retry.policy())


def run(config: TrainDiTConfig) -> list[dict[str, Any]]:
    """Train in this process, or on `trainer.num_workers` Ray Train workers; one result per worker.

    Paths are made absolute here, on the driver, so outputs land where the user started the run
    whichever folder Ray Train runs its workers in.
    """
    config = absolute_paths(
        config, ["out_dir", "log_dir"], must_exist=["data.path"], if_present=["text_encoder_path"]
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
    )


def validate(config: TrainDiTConfig) -> None:
    """Refuse, before any work, values that cannot run (one line naming the key; exit 2 in the CLI)."""
    require(config.data.path not in ("", "???"), "data.path", config.data.path, "name a latent dataset")
    check_exists(config.data.path, "data.path")
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
        card = open_dataset(config.data.path, config.data.storage_options).card.tokenizer
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
