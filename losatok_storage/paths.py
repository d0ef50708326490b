"""Locations as the project spells them: a local path, or a URL with a scheme (`s3://bucket/key`,
`gs://...`, `file:///abs/path`). One home for the tests every package makes of a location."""

from __future__ import annotations

import os


def is_url(location: str | os.PathLike) -> bool:
    """True for `scheme://...` (a `file://` URL included), False for a plain path."""
    return "://" in os.fspath(location)


def is_remote(location: str | os.PathLike) -> bool:
    """True for a URL of another filesystem than this machine's (`s3://`, `gs://`, `http://`, ...)."""
    text = os.fspath(location)
    return is_url(text) and not text.startswith("file://")


def local_path(location: str | os.PathLike) -> str:
    """A local location as a plain path (`file:///a/b` -> `/a/b`); other text unchanged."""
    return os.fspath(location).removeprefix("file://")


def protocol_prefix(location: str) -> str:
    """`"s3://"` for `s3://bucket/key`, `""` for a plain path: what fsspec strips from a URL and a
    listing's names lack, to be put back in front of them."""
    return location.split("://", 1)[0] + "://" if is_url(location) else ""


def resolve_relative(location: str, base: str) -> str:
    """`location` as written in a file at `base` (a manifest): a URL or an absolute path as it
    is, a relative path taken from `base`'s folder, local or remote."""
    if is_url(location) or location.startswith("/"):
        return location
    return f"{base.rsplit('/', 1)[0]}/{location}" if "/" in base else location
