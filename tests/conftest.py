"""Fixtures shared by every package's tests."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import ray
from moto.server import ThreadedMotoServer

# Ray on these machines binds to loopback only: its default is the host's network address,
# and tests must send traffic to loopback alone. Set before any test imports ray.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from losatok_input.testing import convert, make_format_corpus, make_mixed_corpus, synth_music, synth_speech


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory):
    """Real recordings in several formats, rates and channel counts, made once per session."""
    root = tmp_path_factory.mktemp("audio")
    synth_speech(root / "speech.wav", "The quick brown fox jumps over the lazy dog.", sample_rate=22_050)
    synth_music(root / "music.flac", seconds=2.0, sample_rate=44_100, channels=2)
    convert(root / "speech.wav", root / "speech.mp3")
    convert(root / "music.flac", root / "music.ogg")
    convert(root / "speech.wav", root / "speech.m4a")
    convert(root / "speech.wav", root / "speech.opus", sample_rate=48_000)
    convert(root / "speech.wav", root / "speech_8k.wav", sample_rate=8_000)
    return root


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-protocol server (moto's server mode) on a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
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

    root = tmp_path_factory.mktemp("small")
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
    for i, word in enumerate(words):
        synth_speech(root / f"speech_{i:02d}.wav", f"{word} {word} {word}, number {i}", sample_rate=16_000)
        synth_music(root / f"music_{i:02d}.flac", seconds=2.0 + i / 2, sample_rate=22_050, channels=1)
    return root


@pytest.fixture(scope="session")
def format_corpus(tmp_path_factory):
    """Ten real recordings in ten containers and six files that are not audio
    (`losatok_input.testing.make_format_corpus`), made once per session."""
    return make_format_corpus(tmp_path_factory.mktemp("formats"), tmp_path_factory.mktemp("src"))
