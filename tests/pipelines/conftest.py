from __future__ import annotations

import pytest
import ray

from losatok.testing import make_mixed_corpus


@pytest.fixture(scope="session")
def ray_address():
    """One local Ray per test session (2 CPUs); pipelines run in-process join it."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def mixed_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return root, make_mixed_corpus(root)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    """Twelve short real recordings: enough one-input shards to interrupt a run part-way."""
    from losatok.testing import synth_music, synth_speech

    root = tmp_path_factory.mktemp("small")
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
    for i, word in enumerate(words):
        synth_speech(root / f"speech_{i:02d}.wav", f"{word} {word} {word}, number {i}", sample_rate=16_000)
        synth_music(root / f"music_{i:02d}.flac", seconds=2.0 + i / 2, sample_rate=22_050, channels=1)
    return root
