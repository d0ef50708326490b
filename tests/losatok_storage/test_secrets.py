"""Credentials never reach what we store or print."""

from __future__ import annotations

from dataclasses import dataclass, field

from losatok_storage.secrets import REDACTED, is_secret_key, redact, redact_text


def test_secret_keys_are_recognised_and_ordinary_ones_are_not():
    for name in (
        "key",
        "secret",
        "token",
        "aws_secret_access_key",
        "aws_session_token",
        "AWS_ACCESS_KEY_ID",
        "password",
        "client_secret",
        "sas_token",
        "account_key",
        "api_key",
        "Authorization",
        "accessToken",
    ):
        assert is_secret_key(name), name
    for name in ("path", "endpoint_url", "region_name", "keys", "key_map", "monkey", "batch_frames", "anon"):
        assert not is_secret_key(name), name


def test_nested_options_are_redacted_in_a_copy():
    options = {
        "key": "AKIAEXAMPLE",
        "secret": "wJalrXUtnFEMI/K7MDENG",
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000", "aws_session_token": "FwoGZX"},
        "config_kwargs": {"retries": {"max_attempts": 5}},
        "token": None,
    }
    clean = redact({"data": {"path": "s3://bucket/ds", "storage_options": options}, "steps": [1, 2]})
    stored = clean["data"]["storage_options"]
    assert stored["key"] == stored["secret"] == stored["client_kwargs"]["aws_session_token"] == REDACTED
    assert stored["client_kwargs"]["endpoint_url"] == "http://127.0.0.1:9000"
    assert stored["config_kwargs"] == {"retries": {"max_attempts": 5}} and stored["token"] is None
    assert options["secret"] == "wJalrXUtnFEMI/K7MDENG"  # the original is untouched
    text = repr(clean)
    assert "AKIAEXAMPLE" not in text and "wJalr" not in text and "FwoGZX" not in text


def test_urls_lose_their_credentials():
    assert redact_text("s3://AKIA:wJalr@bucket/ds") == f"s3://{REDACTED}@bucket/ds"
    signed = "https://h/x.flac?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=abc123&partNumber=2"
    assert (
        redact_text(signed)
        == f"https://h/x.flac?X-Amz-Credential={REDACTED}&X-Amz-Signature={REDACTED}&partNumber=2"
    )
    assert redact_text("/data/corpus/a.wav") == "/data/corpus/a.wav"


def test_dataclasses_become_redacted_dicts():
    @dataclass
    class Data:
        path: str = "s3://b/ds"
        storage_options: dict = field(default_factory=lambda: {"secret": "s3cr3t"})

    assert redact(Data()) == {"path": "s3://b/ds", "storage_options": {"secret": REDACTED}}
