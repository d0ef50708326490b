from __future__ import annotations

import pytest

from pipelines.config import FieldsConfig
from pipelines.run import tokenize
from pipelines.testing import tiny_run


@pytest.fixture(scope="session")
def pipeline_dataset(ray_address, small_corpus, tmp_path_factory) -> str:
    """A latent dataset written by the tokenization pipeline (tiny model) from real recordings."""
    sink = tmp_path_factory.mktemp("latents") / "ds"
    assert tokenize(tiny_run(small_corpus, sink, inputs_per_shard=3)).ok
    return str(sink)


@pytest.fixture(scope="session")
def feature_dataset(ray_address, small_corpus, tmp_path_factory) -> str:
    """The same recordings tokenized with every field, the high-dim `semantic` features included."""
    sink = tmp_path_factory.mktemp("features") / "ds"
    fields = FieldsConfig(logvar=True, semantic=True, dtype="float32")
    assert tokenize(tiny_run(small_corpus, sink, inputs_per_shard=3, fields=fields)).ok
    return str(sink)
