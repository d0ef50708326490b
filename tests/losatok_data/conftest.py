"""Fixtures for the losatok_data tests: tiny field specs, a real dataset on disk, an S3 server."""

from __future__ import annotations

import numpy as np
import pytest

from losatok_data.testing import tiny_fields, write_fake_dataset


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
