from __future__ import annotations

import pytest
import ray

from losatok.testing import make_mixed_corpus


@pytest.fixture(scope="session")
def ray_address():
    """One local Ray per test session (2 CPUs); pipelines run in-process join it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def mixed_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return root, make_mixed_corpus(root)
