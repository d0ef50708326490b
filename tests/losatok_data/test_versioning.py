import logging

import pytest

from losatok_data.versioning import SCHEMA_VERSION, SchemaVersionError, check_version, parse_version


def test_current_version_accepted():
    assert check_version(SCHEMA_VERSION, "dataset card") == parse_version(SCHEMA_VERSION)


def test_older_minor_accepted_newer_minor_accepted_with_warning(caplog):
    assert check_version("1.0", "dataset card", supported="1.3") == (1, 0)
    with caplog.at_level(logging.WARNING):
        assert check_version("1.7", "dataset card", supported="1.3") == (1, 7)
    assert "1.7" in caplog.text and "ignored" in caplog.text


def test_newer_major_refused_with_found_and_supported_versions():
    with pytest.raises(SchemaVersionError) as info:
        check_version("2.0", "dataset card", supported="1.0")
    message = str(info.value)
    assert "dataset card has schema version 2.0" in message
    assert "1.x (major 1" in message and "older minors" in message


def test_older_major_refused():
    with pytest.raises(SchemaVersionError, match="schema version 0.9"):
        check_version("0.9", "index fragment", supported="1.0")


@pytest.mark.parametrize("bad", [None, "1", "1.0.0", "v1.0", "a.b", ""])
def test_malformed_versions_refused(bad):
    with pytest.raises(SchemaVersionError):
        check_version(bad, "dataset card")
