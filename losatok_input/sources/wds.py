"""The `wds` source: WebDataset audio shards, each tar one input container (and one unit)."""

from __future__ import annotations

from losatok_input.config import SourceConfig
from losatok_input.items import InputItem, input_key
from losatok_storage.filesystem import url_to_fs
from losatok_storage.paths import protocol_prefix


def list_tar_shards(config: SourceConfig) -> list[InputItem]:
    """Every `.tar` under `config.path`: each is one input container (and one unit of work)."""
    fs, root = url_to_fs(config.path, config.storage_options)
    if not fs.exists(root):
        raise FileNotFoundError(f"source {config.path} does not exist")
    protocol = protocol_prefix(config.path)
    paths = [root] if root.endswith(".tar") else sorted(p for p in fs.find(root) if p.endswith(".tar"))
    return [
        InputItem(
            input_key(protocol + path), protocol + path, size_bytes=int(fs.size(path) or 0), container="tar"
        )
        for path in paths
    ]
