"""Inputs read from and shards written to an S3-protocol server on loopback (moto), through s3fs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import s3fs

from losatok_data.layout import DatasetLayout
from losatok_data.ledger import read_failures
from losatok_data.reader import open_dataset
from losatok_data.verify import verify_dataset
from losatok_input.decoder import load_audio
from losatok_input.sources import input_key
from losatok_storage.testing import FaultProxy
from pipelines.config import (
    FieldsConfig,
    ModelConfig,
)
from pipelines.encode import build_model
from pipelines.run import tokenize
from pipelines.testing import tiny_run

pytestmark = pytest.mark.slow


def test_s3_source_and_sink(ray_address, mixed_corpus, s3_endpoint, s3_bucket):
    root, corpus = mixed_corpus
    # Credentials travel in the storage options (Ray workers do not see this test's environment).
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_endpoint}}
    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
    chosen = [p for p in corpus["good"] if "long" not in p.name][:3] + corpus["bad"][:1]
    for path in chosen:
        fs.put(str(path), f"{s3_bucket}/corpus/{path.name}")

    config = tiny_run(
        f"s3://{s3_bucket}/corpus",
        f"s3://{s3_bucket}/latents",
        inputs_per_shard=2,
        fields=FieldsConfig(semantic=True),
        max_failure_fraction=0.5,
        storage_options=options,
    )
    port = int(s3_endpoint.rsplit(":", 1)[1])
    with FaultProxy("127.0.0.1", port) as proxy:  # no fault: it counts the requests on the corpus
        counted = {**options, "client_kwargs": {"endpoint_url": proxy.url}}
        summary = tokenize(replace(config, source=replace(config.source, storage_options=counted)))
    assert summary.ok and summary.inputs == 4 and summary.units == 2
    # each input (small, and listed with its size) costs one GET: no HEAD, no ranges
    per_file = sorted(r for r in proxy.requests if f"/{s3_bucket}/corpus/" in r)
    assert per_file == sorted(f"GET /{s3_bucket}/corpus/{path.name}" for path in chosen)

    url = f"s3://{s3_bucket}/latents"
    report = verify_dataset(url, options)
    assert report.ok, report.summary()
    assert fs.ls(f"{s3_bucket}/latents/semantic")  # the semantic group has its own shard set on S3

    reader = open_dataset(url, options)
    samples = {s.key: s for s in reader.iter_samples()}
    model = build_model(ModelConfig(preset="tiny", seed=0))
    for path in chosen[:3]:
        location = f"s3://{s3_bucket}/corpus/{path.name}"
        sample = samples[f"{input_key(location)}_0000"]
        assert sample.metadata.source == location
        direct = model.encode(load_audio(path)).item(0)["z"].numpy()
        np.testing.assert_allclose(sample.latent.astype(np.float32), direct, atol=2e-3 * np.abs(direct).max())
    ledger = read_failures(DatasetLayout(url, options)).to_pylist()
    assert [r["location"] for r in ledger] == [f"s3://{s3_bucket}/corpus/{chosen[3].name}"]

    rerun = tokenize(config)  # resume on S3: nothing left to do
    assert rerun.units_resumed == 2 and rerun.samples == 0
