"""The schema version shared by every artifact of a latent dataset.

Versions are "MAJOR.MINOR". A minor bump only adds optional things (a new optional field
in a record, a new column in the index), so any reader of the same major can read it: new
columns it does not know are ignored, and old data lacking them reads as None. A major bump
changes meaning or removes something; an older reader must refuse it rather than guess.
"""

from __future__ import annotations

import logging

from losatok_data.errors import SchemaVersionError

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1.3"  # bump the minor for additive changes, the major for breaking ones
# History (every minor reads every older minor of its major):
#   1.0  first release
#   1.1  index `checksums` column (a digest of every tar member, algorithm in the fragment's
#        metadata) and a `stats/shard-*.json` fragment for every committed shard, written
#        before its index fragment; 1.0 data reads and verifies, structurally for its bytes
#   1.2  ledger `transient` column, and `recovered` rows: the ledger is a history, an input is
#        failed while its latest row is a failure; the card counts failed inputs that way
#   note (no bump, within 1.2): `shards.parquet`, per-shard totals derived from the index and
#        rewritten when a run finalises. Optional: older readers ignore it, readers summarise the
#        shards it lacks from their fragments, so no data becomes unreadable either way
#   1.3  measures of each sample's audio, in its json member and as index columns: `rms_db`,
#        `peak`, `clipped_fraction`, `silent_fraction`, `content_hash`, `loudness_lufs`; rows
#        of older data read them as nulls, and an append to older data writes them. The run
#        configuration (run.json) gained segment.cut and max_silent_fraction at the same time:
#        older software refuses to append to data written with them, naming the difference


def parse_version(version: str) -> tuple[int, int]:
    """`"1.2"` -> `(1, 2)`; raises SchemaVersionError for anything else."""
    parts = str(version).split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise SchemaVersionError(f"schema version {version!r} is not of the form MAJOR.MINOR")
    return int(parts[0]), int(parts[1])


def check_version(found: str | None, kind: str, supported: str = SCHEMA_VERSION) -> tuple[int, int]:
    """Accept `found` if this software can read it; otherwise raise SchemaVersionError.

    `kind` names the artifact in the message ("dataset card", "index fragment shard-000003").
    Same major: accepted (a newer minor is read with a warning, its additions ignored).
    Newer or older major: refused, with a message giving both versions.
    """
    if found is None:
        raise SchemaVersionError(f"{kind} has no schema version; this software reads {_supported(supported)}")
    major, minor = parse_version(found)
    own_major, own_minor = parse_version(supported)
    if major > own_major:
        raise SchemaVersionError(
            f"{kind} has schema version {found}; this software reads {_supported(supported)}; "
            "upgrade losatok-pipelines to read it"
        )
    if major < own_major:
        raise SchemaVersionError(
            f"{kind} has schema version {found}; this software reads {_supported(supported)}; "
            f"data of major version {major} must be rewritten"
        )
    if minor > own_minor:
        # Additive by contract: safe to read, but fields added after `supported` are dropped.
        log.warning(
            "%s has schema version %s, newer than %s; fields it added are ignored", kind, found, supported
        )
    return major, minor


def _supported(supported: str) -> str:
    major, _ = parse_version(supported)
    return f"{major}.x (major {major}, up to {supported}) and older minors"
