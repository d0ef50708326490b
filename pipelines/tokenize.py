"""`losatok-tokenize` (= `python -m pipelines.tokenize`): tokenize a corpus into a latent dataset.

    losatok-tokenize source.path=/data/corpus sink.path=/data/latents
    losatok-tokenize model=official model.checkpoint=ckpts/losatok_kl1e-3.pth cluster=auto \
        source.path=s3://corpus/audio sink.path=s3://latents/v1 fields=all

Rerunning the same command appends and resumes: the source is listed afresh, inputs not yet in
the dataset become a new generation, committed shards are kept, the rest is done. `dry_run=true`
prints what a run would do and writes nothing. The exit status is 0 on success, 1 when failed
inputs exceed `cluster.max_failure_fraction` or the storage failed past the retry budget
(an outage: rerun the command to resume and retry), 2 when the run cannot start (bad config, another
tokenizer's dataset at the sink, another run writing the dataset now, no cluster to join).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

import hydra
from omegaconf import DictConfig, OmegaConf

from pipelines.builders import build_tokenize_config

_started = False  # set once Hydra has composed the config and handed it to us


def main() -> None:
    """Console entry point: Hydra's own config errors (a bad override) exit 2, like ours."""
    try:
        _main()
    except SystemExit as done:
        if done.code == 1 and not _started:  # Hydra reported a composition error and exited 1
            sys.exit(2)
        raise


@hydra.main(version_base=None, config_path="conf", config_name="tokenize")
def _main(cfg: DictConfig) -> None:
    global _started
    _started = True
    from losatok.errors import CheckpointError  # not losatok.checkpoint: it imports torch
    from losatok_storage.retry import TransientStorageError
    from losatok_storage.secrets import scrub, secret_values
    from pipelines.lease import LeaseHeldError
    from pipelines.run import StorageOutageError, tokenize
    from pipelines.sink import SinkMismatchError
    from raycluster.connect import ClusterError

    if not cfg.cluster.address:
        # a cluster of this machine alone listens on loopback, not on the host's network address;
        # Ray reads this when it is first imported, which happens below
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    logging.getLogger("ray").setLevel(logging.WARNING)
    secrets = secret_values(OmegaConf.to_container(cfg, resolve=False))  # never printed, below
    try:
        config = build_tokenize_config(cfg)
        summary = tokenize(config)
    except (
        ValueError,
        FileNotFoundError,
        SinkMismatchError,
        CheckpointError,
        LeaseHeldError,
        ClusterError,
    ) as err:
        # usage errors: one line (the first of the message), exit 2, nothing written
        print(scrub(f"error: {err}", secrets), file=sys.stderr)
        sys.exit(2)
    except (StorageOutageError, TransientStorageError) as err:
        # the storage failed past the retry budget: what is committed stays, a rerun resumes
        message = (
            str(err) if isinstance(err, StorageOutageError) else f"storage outage: {err}; rerun to resume"
        )
        print(scrub(f"error: {message}", secrets), file=sys.stderr)
        sys.exit(1)
    except Exception:
        # a bug, or an error nobody foresaw: the traceback, with no credential in it (Hydra's own
        # report would print every override, storage options included)
        print(scrub(traceback.format_exc(), secrets), file=sys.stderr)
        sys.exit(1)
    print(summary.describe())
    if summary.transient_failures:
        print(f"error: {summary.transient_line()}", file=sys.stderr)
        sys.exit(1)
    if not summary.ok:
        print(
            f"error: {summary.failures} of {summary.inputs} inputs failed, more than "
            f"cluster.max_failure_fraction={config.cluster.max_failure_fraction}; see the failure ledger",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
