"""Test fakes of the model side: a byte-level text encoder saved to a file, and a Hugging Face
Hub cache filled by hand (nothing is downloaded in tests). Corpora of real test audio are
`losatok_input.testing`'s job."""

from __future__ import annotations

from pathlib import Path


def load_byte_text_encoder(path: str):
    """A text-encoder factory for tests: a ByteTextEncoder saved as {"config": ..., "state_dict": ...}."""
    import torch

    from losatok.text import ByteTextEncoder, TextEncoderConfig

    payload = torch.load(path, map_location="cpu", weights_only=True)
    encoder = ByteTextEncoder(TextEncoderConfig(**payload["config"]))
    encoder.load_state_dict(payload["state_dict"])
    return encoder


def fill_hub_cache(
    cache_dir: str | Path,
    files: dict[str, object],
    commit: str,
    repo_id: str = "wxzyd123/LoSATok",
    ref: str | None = "main",
) -> Path:
    """Write `files` ({filename: object for torch.save}) into a Hugging Face Hub cache the way
    `hf_hub_download` leaves it: blobs/<sha256>, snapshots/<commit>/<filename> as a relative
    symlink to its blob, and refs/<ref> holding the commit. Returns the snapshot folder."""
    import hashlib
    import io

    import torch

    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for filename, payload in files.items():
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / digest).write_bytes(data)
        link = snapshot / filename
        link.unlink(missing_ok=True)
        link.symlink_to(Path("..", "..", "blobs", digest))
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot
