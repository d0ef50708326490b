"""The storage layer: reading and writing files on any fsspec filesystem (local, `s3://`, ...)
without losing data to an outage, and knowing nothing of audio or latents.

- `paths`: what a location is (a plain path or a URL; local or remote).
- `filesystem`: `RetryingFileSystem` (every call retried through transient faults, listings
  never from a stale cache), atomic writes (`open_atomic`), spooled uploads.
- `retry`: which errors are transient, bounded back-off with jitter (`call`), and reading a
  stream on past an outage (`iter_resuming`).
- `cache`: a node-local disk cache of remote files (`FileCache`), shared by its processes.
- `tario`: WebDataset tars with Python's tarfile, strict (our shards) or lenient (corpora's).
- `secrets`: credentials scrubbed from configs, URLs, messages and tracebacks.
- `testing`: a TCP fault-injection proxy for tests and benches (`FaultProxy`).

Depends on fsspec, pyarrow (parquet files read with retries) and the standard library only.
"""
