"""The published LoSATok weights on the Hugging Face Hub, one word away (`model=official`).

    load_official()                     # losatok_kl1e-3.pth (+ semantic_encoder.pth if needed)
    load_official(variant="kl1e-2", revision="<commit>")

Files come through `huggingface_hub.hf_hub_download`: cached in the standard Hub cache (so a
cache filled on a connected machine can be copied to machines that have no network), the
revision pinnable (a branch, tag or commit), `HF_HUB_OFFLINE=1` honoured. The cache location
and the offline switch are read from the environment when a file is fetched, not when
huggingface_hub is imported, so a process that sets them later (tests, notebooks) is obeyed.
A fetched file is checked against the model's expected layout (on a weightless skeleton)
before any weights are built.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from losatok.config import LoSATokConfig, official
from losatok.errors import CheckpointError

if TYPE_CHECKING:  # torch and the model load only where weights are read: the pipeline's
    import torch  # driver fetches and names the files, and stays free of torch's 1.5 s import

    from losatok.model import LoSATok

log = logging.getLogger(__name__)

REPO_ID = "wxzyd123/LoSATok"
VARIANTS = {"kl1e-3": "losatok_kl1e-3.pth", "kl1e-2": "losatok_kl1e-2.pth"}  # KL floor of training
DEFAULT_VARIANT = "kl1e-3"
SEMANTIC_ENCODER_FILE = "semantic_encoder.pth"
ENCODER_PREFIX = "semantic_encoder."  # a whole-model file without these keys needs SEMANTIC_ENCODER_FILE


class HubError(CheckpointError, FileNotFoundError):
    """A published file cannot be had (offline and not cached, unknown repo, revision or file);
    the message is one line naming the file, the repo and the cache directory."""


@dataclass(frozen=True)
class HubFile:
    """One file fetched from the Hub, resolved to the commit it came from."""

    repo_id: str
    filename: str
    revision: str  # the commit hash the file was resolved at
    path: Path  # the file in the local cache

    @property
    def uri(self) -> str:
        """`hf://repo/filename@commit`: names exactly which bytes were used."""
        return f"hf://{self.repo_id}/{self.filename}@{self.revision}"


@dataclass(frozen=True)
class OfficialFiles:
    """The files a published model is built from."""

    model: HubFile
    semantic_encoder: HubFile | None  # fetched only when the whole-model file lacks the encoder

    @property
    def files(self) -> list[HubFile]:
        return [f for f in (self.model, self.semantic_encoder) if f is not None]

    def describe(self) -> str:
        return " + ".join(f.uri for f in self.files)


def _env_true(value: str) -> bool:
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_cache_dir() -> Path:
    """The Hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else huggingface_hub's default."""
    from huggingface_hub import constants

    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """True when $HF_HUB_OFFLINE (read now) or huggingface_hub's own setting says so."""
    from huggingface_hub import constants

    if "HF_HUB_OFFLINE" in os.environ:
        return _env_true(os.environ["HF_HUB_OFFLINE"])
    return bool(constants.HF_HUB_OFFLINE)


def variant_filename(variant: str | None) -> str:
    """`kl1e-3` (default) or `kl1e-2`, or the file name itself -> the whole-model file name."""
    variant = variant or DEFAULT_VARIANT
    if variant in VARIANTS.values():
        return variant
    try:
        return VARIANTS[variant]
    except KeyError:
        raise ValueError(
            f"unknown LoSATok variant {variant!r}; published variants: {sorted(VARIANTS)}"
        ) from None


def fetch(
    filename: str,
    revision: str | None = None,
    repo_id: str = REPO_ID,
    cache_dir: str | os.PathLike | None = None,
) -> HubFile:
    """Fetch one file (or find it in the cache) and say which commit it is from.

    Raises `HubError` with a one-line message when it cannot be had.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    offline = hub_offline()
    where = f"{filename} from Hugging Face repo {repo_id} (revision {revision or 'main'}; cache {cache})"
    try:
        path = Path(
            hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache, local_files_only=offline)
        )
    except LocalEntryNotFoundError:
        reason = "HF_HUB_OFFLINE is set" if offline else "the Hub cannot be reached"
        pin = f" --revision {revision}" if revision else ""
        raise HubError(
            f"cannot get {where}: it is not cached and {reason}; pre-fetch it on a connected machine "
            f"(`hf download {repo_id} {filename}{pin}`) and copy the cache, or pass a local checkpoint path"
        ) from None
    except (HfHubHTTPError, OSError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HubError(f"cannot get {where}: {first_line}") from None
    # the cache keeps files as <repo folder>/snapshots/<commit>/<filename>
    parts = path.parts
    commit = parts[len(parts) - 1 - len(Path(filename).parts)]
    return HubFile(repo_id=repo_id, filename=filename, revision=commit, path=path)


def _has_semantic_encoder(path: Path) -> bool:
    """Whether a whole-model file holds the frozen encoder (keys only, memory-mapped)."""
    import torch

    from losatok.checkpoint import read_payload

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip-format file: read it whole (a corrupt file raises CheckpointError)
        payload = read_payload(path)
    for wrapper in ("state_dict", "model"):
        if isinstance(payload, Mapping) and isinstance(payload.get(wrapper), Mapping):
            payload = payload[wrapper]
            break
    return isinstance(payload, Mapping) and any(str(k).startswith(ENCODER_PREFIX) for k in payload)


def fetch_official(
    variant: str | None = None, revision: str | None = None, cache_dir: str | os.PathLike | None = None
) -> OfficialFiles:
    """The whole-model file of `variant`, plus `semantic_encoder.pth` (at the same commit) when
    the whole-model file was saved without the frozen encoder."""
    model = fetch(variant_filename(variant), revision, cache_dir=cache_dir)
    encoder = None
    if not _has_semantic_encoder(model.path):
        encoder = fetch(SEMANTIC_ENCODER_FILE, model.revision, cache_dir=cache_dir)
    return OfficialFiles(model, encoder)


def official_state(files: OfficialFiles) -> dict[str, torch.Tensor]:
    """One whole-model state dict from the fetched files (the separate encoder file, if any, fills
    `semantic_encoder.*`)."""
    from losatok.checkpoint import read_state_dict

    state = read_state_dict(files.model.path)
    if files.semantic_encoder is not None:
        encoder = read_state_dict(files.semantic_encoder.path)
        state |= {f"{ENCODER_PREFIX}{k}": v for k, v in encoder.items()}
    return state


def check_layout(state: Mapping[str, torch.Tensor], config: LoSATokConfig, source: str) -> None:
    """Refuse `state` unless it loads strictly into a model of `config`, checked on a skeleton
    built on the meta device (no memory, no time), before the real model is built."""
    import torch

    from losatok.checkpoint import compare_state
    from losatok.model import LoSATok

    with torch.device("meta"):
        skeleton = LoSATok(config)
    _, report = compare_state(skeleton, state, source=source)
    if not report.ok:
        raise CheckpointError(f"{source} does not fit the {config.preset} LoSATok: {report.describe()}")


def load_official(
    config: LoSATokConfig | None = None,
    variant: str | None = None,
    revision: str | None = None,
    semantic_encoder_path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> LoSATok:
    """The published model `variant` (default kl1e-3) at `revision` (default main), fetched or cached.

    `semantic_encoder_path` loads a local `semantic_encoder.pth` over the encoder afterwards.
    """
    from losatok.checkpoint import load_into, ready_for_use
    from losatok.model import LoSATok

    config = config or official()
    files = fetch_official(variant, revision, cache_dir)
    state = official_state(files)
    source = files.describe()
    check_layout(state, config, source)
    model = LoSATok(config)
    load_into(model, state, strict=True, source=source)
    log.info("loaded the published LoSATok from %s", source)
    return ready_for_use(model, semantic_encoder_path)
