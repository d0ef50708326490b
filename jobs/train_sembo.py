"""`losatok-train-sembo` (= `python -m jobs.train_sembo`): train the Semantic Bottleneck on cached features.

    losatok-train-sembo preset=tiny data.path=out/features tokenizer.seed=0
    losatok-train-sembo preset=official data.path=s3://features/v1 tokenizer.checkpoint=ckpts/losatok_kl1e-3.pth

SemBo learns high-dim frozen-encoder features (the dataset's `semantic` field, written by the
pipeline with fields=all) -> low dim -> back, with the normalised reconstruction loss and the
time-relation loss (DESIGN.md 1.2). Training reads shards instead of rerunning the 630 M
encoder every epoch. The last `holdout_shards` shards are held out and reported on; the result
is exported in the published `semantic_encoder.pth` layout (the frozen encoder's weights plus
the trained bottleneck), which `losatok.load_semantic_encoder` loads.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from jobs import checkpointing
from jobs.data import DatasetMismatchError, LatentLoader, LoaderConfig
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
from jobs.training import MetricsLog, TrainerConfig, training_device
from jobs.usage import check_exists, check_output_dir
from losatok import load_model, preset
from losatok.checkpoint import SEMANTIC_FORMAT
from losatok.config import PRESETS, LoSATokConfig
from losatok.losses import sembo_loss
from losatok.semantic import SemanticBottleneck
from losatok_data.reader import DatasetReader, open_dataset

log = logging.getLogger(__name__)


@dataclass
class TokenizerRef:
    """The tokenizer whose frozen encoder made the features (its weights go into the export)."""

    checkpoint: str | None = None  # ours or a published file; None: an untrained preset model
    seed: int = 0  # initialises the untrained model exactly as the pipeline did


@dataclass
class TrainSemboConfig:
    data: LoaderConfig = field(
        default_factory=lambda: LoaderConfig(normalize=False, semantic_field="semantic")
    )
    preset: str = "tiny"  # widths of the bottleneck: semantic_dim -> sembo_hidden -> latent_dim
    tokenizer: TokenizerRef = field(default_factory=TokenizerRef)
    out_dir: str = "out/sembo"
    max_steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.0
    log_every: int = 10
    eval_every: int = 100
    holdout_shards: int = 1  # the last N shards are the held-out split (never trained on)
    seed: int = 0
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # num_workers > 1: Ray Train


def splits(config: TrainSemboConfig, reader: DatasetReader) -> tuple[LoaderConfig, LoaderConfig]:
    """Train and held-out loader configs: the last `holdout_shards` committed shards are held out."""
    numbers = [s.number for s in reader.shards() if s.samples > 0]
    if len(numbers) <= config.holdout_shards:
        raise DatasetMismatchError(
            f"{config.data.path} has {len(numbers)} shards with samples; holding out {config.holdout_shards} leaves none to train on"
        )
    cut = len(numbers) - config.holdout_shards
    return replace(config.data, shards=numbers[:cut]), replace(config.data, shards=numbers[cut:])


@torch.no_grad()
def evaluate(bottleneck: SemanticBottleneck, batches: LatentLoader) -> dict[str, float]:
    """Held-out normalised reconstruction error, relation loss and cosine similarity (frame mean)."""
    totals = {"reconstruction": 0.0, "relation": 0.0, "cosine": 0.0}
    count = 0
    device = next(bottleneck.parameters()).device
    for batch in batches:
        high, mask = batch.semantic.to(device), batch.mask.to(device)
        low, recon = bottleneck(high)
        losses = sembo_loss(high, recon, low, mask)
        cosine = F.cosine_similarity(recon, high, dim=-1)[mask].mean()
        totals["reconstruction"] += float(losses["reconstruction"])
        totals["relation"] += float(losses["relation"])
        totals["cosine"] += float(cosine)
        count += 1
    return {f"heldout_{k}": v / max(count, 1) for k, v in totals.items()}


@dataclass
class Training:
    """What the train loop needs, made by `setup`; `step` and `history` advance as `train` runs."""

    config: TrainSemboConfig
    model_config: LoSATokConfig  # the preset: widths of the bottleneck, recorded in checkpoints
    rank: int
    device: torch.device
    batches: LatentLoader  # this worker's part of the training shards
    heldout: LatentLoader  # the held-out shards, whole, on every worker
    bottleneck: SemanticBottleneck
    optimizer: torch.optim.Optimizer
    metrics: MetricsLog
    step: int = 0  # optimizer steps taken
    history: list[dict[str, float]] = field(default_factory=list)  # every step's losses (this run)


def train_loop(config: TrainSemboConfig) -> dict[str, Any]:
    """Setup -> train -> cleanup on this process (one worker of DDP when a process group exists)."""
    training = setup(config)
    train(training)
    return cleanup(training)


def setup(config: TrainSemboConfig) -> Training:
    """Split and check the features, build the bottleneck and its optimizer, resume from the latest
    checkpoint if any.

    Raises DatasetMismatchError when the dataset has no `semantic` field, features of another width
    than the preset's, or too few shards to hold some out."""
    torch.manual_seed(config.seed)
    model_config = preset(config.preset)
    reader = open_dataset(config.data.path, config.data.storage_options)
    train_data, heldout_data = splits(config, reader)
    card = reader.card
    if "semantic" not in card.fields:
        raise DatasetMismatchError(
            f"{config.data.path} has no 'semantic' field (tokenize with fields=all); its fields are {card.fields.names()}"
        )
    width = card.fields["semantic"].frame_shape[0]
    if width != model_config.semantic_dim:
        raise DatasetMismatchError(
            f"{config.data.path} holds {width}-dim semantic features; preset {config.preset} expects {model_config.semantic_dim}"
        )
    latent_dim = card.fields["latent"].frame_shape[0]
    rank, world = rank_and_world()
    batches = LatentLoader(train_data, latent_dim, rank, world, semantic_dim=width)
    heldout = LatentLoader(heldout_data, latent_dim, 0, 1, semantic_dim=width)  # whole, on every worker

    device = training_device(config.trainer)
    bottleneck = SemanticBottleneck(
        model_config.semantic_dim, model_config.latent_dim, model_config.sembo_hidden
    )
    bottleneck = bottleneck.to(device)
    optimizer = torch.optim.AdamW(bottleneck.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    step = 0
    resumed = checkpointing.load_latest(f"{config.out_dir}/checkpoints")
    if resumed is not None:
        bottleneck.load_state_dict(resumed["bottleneck"])
        optimizer.load_state_dict(resumed["optimizer"])
        step = resumed["step"]
        checkpointing.restore_rng(resumed["rng"])
    return Training(
        config=config,
        model_config=model_config,
        rank=rank,
        device=device,
        batches=batches,
        heldout=heldout,
        bottleneck=bottleneck,
        optimizer=optimizer,
        metrics=MetricsLog(config.out_dir, rank == 0, step),
        step=step,
    )


def train(training: Training) -> None:
    """Steps up to max_steps: metrics every log_every steps; every eval_every (and at the last
    step) a held-out evaluation and a checkpoint."""
    config, bottleneck, rank, device = training.config, training.bottleneck, training.rank, training.device
    while training.step < config.max_steps:
        for batch in training.batches:
            if training.step >= config.max_steps:
                break
            high, mask = batch.semantic.to(device), batch.mask.to(device)  # (B, T, S), (B, T)
            low, recon = bottleneck(high)
            losses = sembo_loss(high, recon, low, mask)
            training.optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            average_gradients(bottleneck.parameters())
            training.optimizer.step()
            training.step += 1
            step = training.step
            row = {k: float(v.detach()) for k, v in losses.items()}
            training.history.append(row)
            if (step % config.eval_every == 0 or step == config.max_steps) and rank == 0:
                row |= evaluate(bottleneck, training.heldout)
                save_training_checkpoint(training)
            if step % config.log_every == 0 or "heldout_cosine" in row:
                training.metrics.write(step, row)
            if step % config.eval_every == 0:
                barrier()


def save_training_checkpoint(training: Training) -> None:
    """The bottleneck, its optimizer and the RNGs: a restart continues exactly."""
    checkpointing.save(
        f"{training.config.out_dir}/checkpoints",
        training.step,
        {
            "step": training.step,
            "config": training.model_config.to_dict(),  # the widths of the bottleneck
            "bottleneck": training.bottleneck.state_dict(),
            "optimizer": training.optimizer.state_dict(),
            "rng": checkpointing.rng_state(),
        },
    )


def cleanup(training: Training) -> dict[str, Any]:
    """Close the metrics, export the semantic encoder (rank 0), and report this worker's run with
    a last held-out evaluation."""
    config, bottleneck, history = training.config, training.bottleneck, training.history
    training.metrics.close()
    export = export_semantic_encoder(config, bottleneck) if training.rank == 0 else None
    final = evaluate(bottleneck, training.heldout)
    checksum = float(sum(p.detach().double().sum() for p in bottleneck.parameters()))
    result = {
        "step": training.step,
        "first": history[0] if history else None,
        "last": history[-1] if history else None,
    }
    result |= {**final, "export": export, "param_checksum": checksum, "rank": training.rank}
    write_worker_result(config.out_dir, result)
    return result


def run(config: TrainSemboConfig) -> list[dict[str, Any]]:
    config = absolute_paths(
        config, ["out_dir"], must_exist=["data.path", "tokenizer.checkpoint"]
    )  # Ray Train workers run elsewhere
    t = config.trainer
    return run_workers(train_loop, config, t.num_workers, t.use_gpu, t.address, config.out_dir, "sembo")


def export_semantic_encoder(config: TrainSemboConfig, bottleneck: SemanticBottleneck) -> str:
    """Write `<out_dir>/semantic_encoder.pth` in the published layout (encoder.* and bottleneck.*
    under "state_dict"), with the tokenizer's config beside it."""
    torch.manual_seed(config.tokenizer.seed)
    tokenizer = load_model(config.tokenizer.checkpoint, preset(config.preset))
    state = {f"encoder.{k}": v for k, v in tokenizer.semantic_encoder.encoder.state_dict().items()}
    state |= {f"bottleneck.{k}": v.detach().cpu().clone() for k, v in bottleneck.state_dict().items()}
    path = os.path.join(config.out_dir, "semantic_encoder.pth")
    os.makedirs(config.out_dir, exist_ok=True)
    # the config of the tokenizer this encoder belongs to rides along (ignored by published loaders)
    payload = {"format": SEMANTIC_FORMAT, "config": tokenizer.config.to_dict(), "state_dict": state}
    torch.save(payload, path + ".tmp")
    os.replace(path + ".tmp", path)
    return path


ConfigStore.instance().store(name="train_sembo_schema", node=TrainSemboConfig)


def validate(config: TrainSemboConfig) -> None:
    """Refuse, before any work, values that cannot run (one line naming the key; exit 2 in the CLI)."""
    require(config.data.path not in ("", "???"), "data.path", config.data.path, "name a feature dataset")
    check_exists(config.data.path, "data.path")
    require(config.preset in PRESETS, "preset", config.preset, f"one of {sorted(PRESETS)}")
    require_positive(
        config, "max_steps", "log_every", "eval_every", "holdout_shards", "lr", "trainer.num_workers",
        "data.batch_frames", "data.max_frames", "data.shuffle_buffer",
    )  # fmt: skip
    check_exists(config.tokenizer.checkpoint, "tokenizer.checkpoint")
    check_output_dir(config.out_dir, "out_dir")


@hydra.main(version_base=None, config_path="conf", config_name="train_sembo")
def hydra_main(cfg: DictConfig) -> None:
    config = config_from_hydra(TrainSemboConfig, cfg)
    validate(config)
    cli(run, config)


def main() -> None:
    entry("train_sembo", TrainSemboConfig, run, hydra_main, validate)


if __name__ == "__main__":
    main()
