"""Fixtures for the schemas tests: tiny field specs, a real dataset on disk, an S3 server."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from schemas.testing import tiny_fields, write_fake_dataset


@pytest.fixture
def fields():
    return tiny_fields()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def dataset(tmp_path):
    """Two shards of three samples, both field groups, one ledger row, a true card."""
    return write_fake_dataset(str(tmp_path / "ds"), n_shards=2, samples_per_shard=3)


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-protocol server (moto's server mode) on a free loopback port."""
    moto_server = pytest.importorskip("moto.server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch):
    """An empty bucket on the loopback server, dummy credentials in the environment."""
    import s3fs

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}, skip_instance_cache=True)
    bucket = f"bucket-{np.random.default_rng().integers(1 << 30)}"
    fs.mkdir(bucket)
    return bucket
