"""Running a training loop in this process or on the workers of a Ray Train TorchTrainer.

Every recipe is a function `loop(config) -> dict` that works alone and, when a process group
exists (Ray Train sets one up per worker: gloo on CPU, NCCL on GPU), as one DDP worker.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import torch.distributed as dist

from jobs.usage import UsageError, fail
from losatok_storage.paths import is_url

log = logging.getLogger(__name__)


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def absolute_paths(
    config: Any, fields: Sequence[str], must_exist: Sequence[str] = (), if_present: Sequence[str] = ()
) -> Any:
    """A copy of dataclass `config` whose dotted `fields` hold absolute local paths.

    Ray Train runs workers in a folder of its own, so a relative path means something else
    there; the driver resolves every path against the folder the user started in. URLs
    (s3://...) and unset values are kept. A local path in `must_exist` that is missing raises
    FileNotFoundError here, before any worker starts; one in `if_present` is made absolute
    only when it exists (else it may be a name that a factory resolves).
    """
    for dotted in (*fields, *must_exist, *if_present):
        value = _get(config, dotted)
        if not value or is_url(str(value)):
            continue
        absolute = os.path.abspath(os.path.expanduser(str(value)))
        if dotted in must_exist and not os.path.exists(absolute):
            raise FileNotFoundError(f"{dotted}={value}: no such file or folder ({absolute})")
        if dotted in if_present and not os.path.exists(absolute):
            continue
        config = _replace(config, dotted, absolute)
    return config


def _get(config: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def _replace(config: Any, dotted: str, value: Any) -> Any:
    head, _, rest = dotted.partition(".")
    if not rest:
        return dataclasses.replace(config, **{head: value})
    return dataclasses.replace(config, **{head: _replace(getattr(config, head), rest, value)})


def train_storage(out_dir: str, storage_options: dict[str, Any] | None = None) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for Ray Train's own state: `<out_dir>/ray_train`.

    Under the run's own out_dir, so runs with different out_dirs never see each other's state;
    an s3:// out_dir goes through the same fsspec options as the checkpoints.
    """
    if not is_url(out_dir):
        return os.path.join(os.path.abspath(out_dir), "ray_train"), None
    import pyarrow.fs

    from losatok_storage.filesystem import url_to_fs

    fs, root = url_to_fs(out_dir, storage_options)
    return f"{root.rstrip('/')}/ray_train", pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))


def run_workers(
    loop: Callable[[Any], dict[str, Any]],
    config: Any,
    num_workers: int,
    use_gpu: bool,
    address: str | None,
    out_dir: str,
    name: str,
    storage_options: dict[str, Any] | None = None,
    cpus_per_worker: float | None = None,
) -> list[dict[str, Any]]:
    """`loop(config)` here when `num_workers <= 1`, else on that many Ray Train workers (DDP).

    Returns every worker's result, by rank. Rank 0's log lines (progress included) and every
    rank's warnings are relayed to this process and logged here, so a multi-worker run reads
    like a single-worker one on the console and in `ray job logs`. Ray Train keeps its state
    under `<out_dir>/ray_train/<name>-<time>-<id>`: unique per run, never resumed by another.
    `address` ("auto" or host:port) joins a running cluster; None starts a Ray of this machine.
    """
    if num_workers <= 1:
        return [loop(config)]
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from raycluster.connect import join_or_start

    join_or_start(address, "trainer.address=auto" if address == "auto" else f"trainer.address={address}")

    cpus = 1.0 if cpus_per_worker is None else cpus_per_worker
    have = ray.cluster_resources()
    if have.get("CPU", 0) < num_workers * cpus or (use_gpu and have.get("GPU", 0) < num_workers):
        log.warning(
            "the Ray cluster has %s CPUs and %s GPUs now; %d workers need %s CPUs%s: Ray Train waits until "
            "they are free (trainer.cpus_per_worker sets the CPUs each worker reserves)",
            have.get("CPU", 0), have.get("GPU", 0), num_workers, num_workers * cpus,
            f" and {num_workers} GPUs" if use_gpu else "",
        )  # fmt: skip

    from jobs.relay import WorkerRelay

    relay = WorkerRelay()
    forward = relay.forwarder()

    def per_worker(_: dict) -> None:
        rank = ray.train.get_context().get_world_rank()
        with forward.installed(rank):
            result = loop(config)
        forward.result(rank, result)

    storage_path, filesystem = train_storage(out_dir, storage_options)
    run_name = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    trainer = TorchTrainer(
        per_worker,
        scaling_config=ScalingConfig(
            num_workers=num_workers,
            use_gpu=use_gpu,
            resources_per_worker=None if cpus_per_worker is None else {"CPU": cpus_per_worker},
        ),
        run_config=RunConfig(name=run_name, storage_path=storage_path, storage_filesystem=filesystem),
    )
    with relay.pumping():
        trainer.fit()
    return relay.results(num_workers)


def write_worker_result(out_dir: str, result: dict[str, Any]) -> None:
    """`final-rank<r>.json` per worker of a distributed run, so replicas can be compared."""
    rank, world = rank_and_world()
    if world > 1 and not is_url(out_dir):
        with open(os.path.join(out_dir, f"final-rank{rank}.json"), "w") as handle:
            json.dump(result, handle)


def average_gradients(parameters) -> None:
    """All-reduce the gradients of `parameters` to their mean over workers (no-op alone).

    For recipes whose training step is not one `forward` call (the tokenizer calls `features`,
    `decode` and the discriminators separately), this is DDP's gradient sync done explicitly.
    """
    _, world = rank_and_world()
    if world == 1:
        return
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier()


def config_from_hydra(schema: type, cfg: Any) -> Any:
    """Hydra's composed config -> an instance of the dataclass `schema` (unknown keys fail)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    values = {k: v for k, v in cfg.items() if k not in ("hydra", "experiment")}
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))


def require(ok: bool, key: str, value: Any, need: str) -> None:
    """Refuse a config value with one line naming it: `max_steps=0: must be at least 1`."""
    if not ok:
        raise UsageError(f"{key}={value}: {need}")


def require_positive(config: Any, *keys: str) -> None:
    """Every dotted `key` of `config` (e.g. "data.batch_frames") must be a number > 0."""
    for key in keys:
        value = config
        for part in key.split("."):
            value = getattr(value, part)
        require(value > 0, key, value, "must be greater than 0")


def cli(
    run: Callable[[Any], list[dict[str, Any]]],
    config: Any,
    epilogue: Callable[[Any], str] | None = None,
    secrets: set[str] | None = None,
) -> None:
    """Entry-point body: run, print the first worker's result as JSON (stdout) and `epilogue(config)`
    (stderr); a bad dataset or config exits 2 with one line naming it instead of a traceback.

    The storage failing past its retry budget exits 1 with one line (rerunning resumes from the
    last checkpoint); anything unforeseen exits 1 with its traceback. Every line printed or
    logged has `secrets` (and credentials in URLs) replaced.
    """
    from jobs.data import DatasetMismatchError
    from losatok.checkpoint import CheckpointError
    from losatok_data.errors import SchemaError
    from losatok_storage.retry import TransientStorageError, outage_in
    from losatok_storage.secrets import scrub
    from raycluster.connect import ClusterError

    secrets = secrets or set()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, ScrubSecrets) for f in handler.filters):  # once per handler
            handler.addFilter(ScrubSecrets(secrets))
    try:
        results = run(config)
    except (
        FileNotFoundError,
        DatasetMismatchError,
        SchemaError,
        CheckpointError,
        ValueError,
        ClusterError,
    ) as err:
        fail(scrub(str(err), secrets))
    except Exception as err:
        outage = err if isinstance(err, TransientStorageError) else outage_in(err)
        if outage is not None:
            message = f"storage outage: {outage}; the run stopped; rerun the same command to resume"
            print(scrub(f"error: {message}", secrets), file=sys.stderr)
            sys.exit(1)
        print(scrub(traceback.format_exc(), secrets), file=sys.stderr)  # a bug: no credential in it
        sys.exit(1)
    print(json.dumps(results[0], default=str))
    if epilogue is not None:
        print(epilogue(config), file=sys.stderr)


def entry(
    config_name: str,
    schema: type,
    run: Callable[[Any], list[dict[str, Any]]],
    hydra_main: Callable[[], Any],
    validate: Callable[[Any], None] | None = None,
    epilogue: Callable[[Any], str] | None = None,
) -> None:
    """Console entry of a trainer: compose `jobs/conf/<config_name>.yaml` with the command line's
    overrides, validate, run. Hydra reports a bad override in several lines and exits 1; here it
    is one line and exit 2. Hydra's own flags (--help, --cfg job, -m) go to `hydra_main`."""
    argv = sys.argv[1:]
    if any(arg.startswith("-") for arg in argv):
        hydra_main()
        return
    from hydra import compose, initialize_config_module

    from losatok_storage.secrets import scrub

    secrets = override_secrets(argv)  # never printed: every error line is scrubbed of them
    try:
        with initialize_config_module("jobs.conf", version_base=None):
            cfg = compose(config_name, overrides=argv)
        config = config_from_hydra(schema, cfg)
    except Exception as err:  # noqa: BLE001  # override syntax, unknown key, wrong type, missing value
        fail(scrub(one_line(err), secrets))
    try:
        if validate is not None:
            validate(config)
    except ValueError as err:
        fail(scrub(str(err), secrets))
    cli(run, config, epilogue, secrets)


def override_secrets(overrides: Sequence[str]) -> set[str]:
    """The values of command-line overrides whose key names a credential
    (`+data.storage_options.secret=...`, `storage_options.key=...`)."""
    from losatok_storage.secrets import is_secret_key

    found = set()
    for override in overrides:
        key, equals, value = override.lstrip("+~").partition("=")
        if equals and value and is_secret_key(key.rsplit(".", 1)[-1]):
            found.add(value.strip("'\""))
    return found


class ScrubSecrets(logging.Filter):
    """Replaces `secrets` (and credentials in URLs) in every record a handler writes."""

    def __init__(self, secrets: set[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        from losatok_storage.secrets import scrub

        record.msg, record.args = scrub(record.getMessage(), self.secrets), None
        return True


def one_line(err: BaseException | None) -> str:
    """Hydra/OmegaConf's multi-line messages, with their causes, as one line without detail lines:
    `Error merging override max_steps=abc: Value 'abc' of type 'str' could not be converted to Integer`."""
    detail = ("full_key", "object_type", "reference_type", "See https", "To append", "provider=")
    parts = []
    while err is not None:
        text = str(err).split("Config search path:")[0]
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        line = " ".join(line for line in lines if not line.startswith(detail)).rstrip(".")
        if line and line not in parts:
            parts.append(line)
        err = err.__cause__
    return ": ".join(parts) or "bad command line"
