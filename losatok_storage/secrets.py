"""Keeping credentials out of everything we write: checkpoints, cards, run logs, metrics, logs.

Storage options carry credentials (`key`, `secret`, `token`, `aws_secret_access_key`,
`client_kwargs.aws_session_token`, ...) and URLs may too (`s3://KEY:SECRET@bucket/x`,
`https://host/x?X-Amz-Signature=...`). Before a config or record is stored or printed it goes
through `redact`, which returns a copy with every such value replaced by `REDACTED`. The
original is never changed: the running job still needs the credentials.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***"

# a key names a secret when one of its words (split on '_', '-', '.' and case changes) is one of
# these, or when it is one of the whole names below
_SECRET_WORDS = {"secret", "token", "password", "passwd", "credential", "credentials", "signature", "sas"}
_SECRET_KEYS = {
    "key",  # s3fs: the access key id
    "access_key",
    "access_key_id",
    "aws_access_key_id",
    "account_key",
    "api_key",
    "apikey",
    "private_key",
    "authorization",
    "auth",
    "sas_token",
}
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
_URL_QUERY_SECRET = re.compile(
    r"(?P<name>(?:X-Amz-(?:Signature|Credential|Security-Token)|sig|signature|token|access_token|api_key|key))=[^&\s]+",
    re.IGNORECASE,
)


def is_secret_key(name: str) -> bool:
    """Whether a mapping key names a credential (`secret`, `aws_session_token`, `key`, ...)."""
    lowered = name.lower()
    if lowered in _SECRET_KEYS:
        return True
    words = re.split(r"[_\-.\s]+|(?<=[a-z])(?=[A-Z])", name)
    return any(word.lower() in _SECRET_WORDS for word in words if word)


def redact_text(text: str) -> str:
    """`text` with credentials in URLs (user info, signed query parameters) replaced."""
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    return _URL_QUERY_SECRET.sub(lambda m: f"{m['name']}={REDACTED}", text)


def redact(value: Any) -> Any:
    """A copy of `value` (mappings, sequences, dataclasses, strings) with every secret replaced."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {
            key: (
                REDACTED
                if isinstance(key, str) and is_secret_key(key) and item not in (None, "")
                else redact(item)
            )
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(redact(item) for item in value)
    if isinstance(value, str):
        return redact_text(value)
    return value


def secret_values(value: Any) -> set[str]:
    """Every string stored under a secret-named key in `value` (mappings, sequences, dataclasses)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    found: set[str] = set()
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and is_secret_key(key) and isinstance(item, str) and item:
                found.add(item)
            else:
                found |= secret_values(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            found |= secret_values(item)
    return found


def scrub(text: str, secrets: set[str]) -> str:
    """`text` (a traceback, a log line) with each of `secrets` and credentials in URLs replaced."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return redact_text(text)
