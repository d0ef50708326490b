"""Versioned data contracts of LoSATok latent datasets, shared by pipelines (writers) and jobs (readers).

Layout of a dataset: `schemas.layout`. Records and their codecs: `manifest` (inputs),
`sample` (WebDataset samples), `index` (parquet row per sample), `ledger` (failed inputs),
`card` (dataset card). Writing: `writer`; reading: `reader`; checking: `verify` and the
`losatok-data` command (`schemas.cli`).
"""

from schemas.card import (
    DatasetCard,
    TokenizerIdentity,
    Totals,
    hash_config,
    read_card,
    sha256_file,
    write_card,
)
from schemas.errors import ManifestError, SampleValidationError, SchemaError, SchemaVersionError
from schemas.fields import LATENT_GROUP, SEMANTIC_GROUP, FieldSet, FieldSpec, default_fields
from schemas.index import INDEX_SCHEMA, IndexRow, ShardInfo, assign_shards, read_index, write_index_fragment
from schemas.layout import DatasetLayout, shard_name, shard_number
from schemas.ledger import LEDGER_SCHEMA, FailureRecord, read_failures, write_failures
from schemas.manifest import ManifestRow, iter_manifest, read_manifest
from schemas.reader import DatasetReader, open_dataset
from schemas.sample import LatentSample, SampleMetadata, decode_sample, encode_sample, validate_sample
from schemas.stats import ChannelStats
from schemas.verify import Finding, VerifyReport, verify_dataset
from schemas.versioning import SCHEMA_VERSION, check_version
from schemas.writer import ShardWriter, WrittenShard, write_shard

__all__ = [
    "INDEX_SCHEMA",
    "LATENT_GROUP",
    "LEDGER_SCHEMA",
    "SCHEMA_VERSION",
    "SEMANTIC_GROUP",
    "ChannelStats",
    "DatasetCard",
    "DatasetLayout",
    "DatasetReader",
    "FailureRecord",
    "FieldSet",
    "FieldSpec",
    "Finding",
    "IndexRow",
    "LatentSample",
    "ManifestError",
    "ManifestRow",
    "SampleMetadata",
    "SampleValidationError",
    "SchemaError",
    "SchemaVersionError",
    "ShardInfo",
    "ShardWriter",
    "TokenizerIdentity",
    "Totals",
    "VerifyReport",
    "WrittenShard",
    "assign_shards",
    "check_version",
    "decode_sample",
    "default_fields",
    "encode_sample",
    "hash_config",
    "iter_manifest",
    "open_dataset",
    "read_card",
    "read_failures",
    "read_index",
    "read_manifest",
    "sha256_file",
    "shard_name",
    "shard_number",
    "validate_sample",
    "verify_dataset",
    "write_card",
    "write_failures",
    "write_index_fragment",
    "write_shard",
]
