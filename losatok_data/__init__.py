"""Latent datasets: their versioned contracts, and the format's one reader, writer and checker.

Shared by `pipelines` (which writes datasets) and `jobs` (which trains on them). Layout of a
dataset: `layout`. Records and their codecs: `manifest` (inputs), `sample` (WebDataset samples),
`fields` (which arrays a sample holds), `index` (a parquet row per sample), `ledger` (failed
inputs), `card` (the dataset card), `stats`, `checksums`, `versioning`. Writing: `writer`;
reading: `reader`; checking: `verify` and the `losatok-data` command (`cli`). Test fakes:
`testing`.

Depends on pyarrow, numpy and the storage layer (`losatok_storage`) only.
"""

from losatok_data.card import (
    DatasetCard,
    TokenizerIdentity,
    Totals,
    hash_config,
    read_card,
    sha256_file,
    write_card,
)
from losatok_data.errors import ManifestError, SampleValidationError, SchemaError, SchemaVersionError
from losatok_data.fields import LATENT_GROUP, SEMANTIC_GROUP, FieldSet, FieldSpec, default_fields
from losatok_data.index import (
    INDEX_SCHEMA,
    MEASURE_COLUMNS,
    IndexRow,
    ShardInfo,
    assign_shards,
    read_index,
    read_shard_summary,
    summarise_shards,
    write_index_fragment,
    write_shard_summary,
)
from losatok_data.layout import DatasetLayout, shard_name, shard_number
from losatok_data.ledger import LEDGER_SCHEMA, FailureRecord, read_failures, write_failures
from losatok_data.manifest import ManifestRow, iter_manifest, read_manifest
from losatok_data.reader import DatasetReader, open_dataset
from losatok_data.sample import LatentSample, SampleMetadata, decode_sample, encode_sample, validate_sample
from losatok_data.stats import ChannelStats
from losatok_data.verify import Finding, VerifyReport, verify_dataset
from losatok_data.versioning import SCHEMA_VERSION, check_version
from losatok_data.writer import ShardWriter, WrittenShard, write_shard

__all__ = [
    "INDEX_SCHEMA",
    "LATENT_GROUP",
    "LEDGER_SCHEMA",
    "MEASURE_COLUMNS",
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
    "read_shard_summary",
    "sha256_file",
    "shard_name",
    "shard_number",
    "summarise_shards",
    "validate_sample",
    "verify_dataset",
    "write_card",
    "write_failures",
    "write_index_fragment",
    "write_shard",
    "write_shard_summary",
]
