"""What a location is: one rule for every package (a URL or a path; local or remote)."""

from pathlib import Path

import pytest

from losatok_storage.paths import is_remote, is_url, local_path, protocol_prefix, resolve_relative


@pytest.mark.parametrize(
    ("location", "url", "remote"),
    [
        ("s3://bucket/a.wav", True, True),
        ("gs://bucket/a", True, True),
        ("https://host/a.flac", True, True),
        ("file:///data/a.wav", True, False),
        ("/data/a.wav", False, False),
        ("relative/a.wav", False, False),
        (Path("/data/a.wav"), False, False),
        ("odd:name.wav", False, False),  # a colon alone is not a scheme
    ],
)
def test_urls_and_remote_locations(location, url, remote):
    assert is_url(location) is url
    assert is_remote(location) is remote


def test_local_paths_and_protocols():
    assert local_path("file:///data/a.wav") == "/data/a.wav"
    assert local_path("/data/a.wav") == "/data/a.wav"
    assert protocol_prefix("s3://bucket/x") == "s3://"
    assert protocol_prefix("/data/x") == ""


@pytest.mark.parametrize(
    ("location", "base", "expected"),
    [
        ("a.wav", "/m/manifest.jsonl", "/m/a.wav"),
        ("sub/a.wav", "s3://b/m/cuts.jsonl.gz", "s3://b/m/sub/a.wav"),
        ("/abs/a.wav", "s3://b/m/cuts.jsonl", "/abs/a.wav"),
        ("s3://other/a.wav", "/m/manifest.csv", "s3://other/a.wav"),
        ("a.wav", "manifest.csv", "a.wav"),  # a manifest in the working folder
    ],
)
def test_a_location_in_a_manifest_resolves_against_its_folder(location, base, expected):
    assert resolve_relative(location, base) == expected
