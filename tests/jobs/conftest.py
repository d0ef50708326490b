from __future__ import annotations

import pytest

from pipelines.config import ClusterConfig, ModelConfig, SinkConfig, SourceConfig, TokenizeConfig
from pipelines.run import tokenize


@pytest.fixture(scope="session")
def pipeline_dataset(ray_address, small_corpus, tmp_path_factory) -> str:
    """A latent dataset written by the tokenization pipeline (tiny model) from real recordings."""
    sink = tmp_path_factory.mktemp("latents") / "ds"
    config = TokenizeConfig(
        source=SourceConfig(path=str(small_corpus)),
        sink=SinkConfig(path=str(sink), inputs_per_shard=3),
        model=ModelConfig(preset="tiny", seed=0),
        cluster=ClusterConfig(max_failure_fraction=0.0),
    )
    assert tokenize(config).ok
    return str(sink)


@pytest.fixture(scope="session")
def feature_dataset(ray_address, small_corpus, tmp_path_factory) -> str:
    """The same recordings tokenized with every field, the high-dim `semantic` features included."""
    from pipelines.config import FieldsConfig

    sink = tmp_path_factory.mktemp("features") / "ds"
    config = TokenizeConfig(
        source=SourceConfig(path=str(small_corpus)),
        sink=SinkConfig(path=str(sink), inputs_per_shard=3),
        model=ModelConfig(preset="tiny", seed=0),
        fields=FieldsConfig(logvar=True, semantic=True, dtype="float32"),
        cluster=ClusterConfig(max_failure_fraction=0.0),
    )
    assert tokenize(config).ok
    return str(sink)
