"""Checksums of tar members, recorded in the index so `verify` can prove the bytes are the written ones.

sha256 by default: with the SHA extensions of current x86 and ARM CPUs it hashes at about
1 GB/s in one core (hashlib, through OpenSSL), a few per cent of the commit stage's time
(`bench/checksum_cost.py`), and it names the bytes unambiguously. crc32 (zlib, ~4 GB/s) is
kept for readers of fragments written with it. Both come from the standard library.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable

DEFAULT_CHECKSUM = "sha256"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _crc32(data: bytes) -> str:
    return f"{zlib.crc32(data):08x}"


ALGORITHMS: dict[str, Callable[[bytes], str]] = {"sha256": _sha256, "crc32": _crc32}


def checksum(data: bytes, algorithm: str = DEFAULT_CHECKSUM) -> str:
    """Hex digest of `data` with `algorithm` ("sha256" or "crc32")."""
    try:
        return ALGORITHMS[algorithm](data)
    except KeyError:
        raise ValueError(f"unknown checksum algorithm {algorithm!r}; known: {sorted(ALGORITHMS)}") from None
