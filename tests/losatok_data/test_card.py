import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest

from losatok_data.card import DatasetCard, hash_config, read_card, sha256_file, write_card
from losatok_data.errors import SchemaError, SchemaVersionError
from losatok_data.reader import open_dataset
from losatok_data.stats import ChannelStats
from losatok_data.testing import tiny_fields, tiny_tokenizer
from losatok_data.versioning import SCHEMA_VERSION


def test_card_json_round_trip():
    card = DatasetCard(
        tokenizer=tiny_tokenizer(),
        fields=tiny_fields(),
        latent_stats=ChannelStats.of(np.random.default_rng(0).standard_normal((50, 16))),
        failures={"decode": 2},
        description="test",
    )
    back = DatasetCard.from_json(card.to_json())
    assert back.tokenizer == card.tokenizer and back.fields == card.fields
    assert back.failures == {"decode": 2} and back.failed_inputs == 2
    np.testing.assert_allclose(back.latent_stats.std, card.latent_stats.std)
    data = json.loads(card.to_json())
    assert (
        data["schema_version"] == SCHEMA_VERSION
        and data["sample_rate"] == 16000
        and data["frame_rate"] == 25.0
    )
    assert data["fields"][3] == {
        "name": "semantic",
        "dtype": "float16",
        "frame_shape": [64],
        "group": "semantic",
        "required": True,
        "description": "frozen semantic encoder output, (T, semantic_dim)",
    }


def test_card_of_a_newer_major_version_is_refused_with_the_stated_message(dataset):
    path = dataset.layout.card_path
    data = json.loads(dataset.layout.fs.cat_file(path))
    data["schema_version"] = "2.0"
    data["fields"] = "changed beyond recognition in 2.0"
    dataset.layout.fs.pipe_file(path, json.dumps(data).encode())
    with pytest.raises(SchemaVersionError) as info:
        open_dataset(dataset.url)
    message = str(info.value)
    assert "card.json has schema version 2.0" in message
    assert f"this software reads 1.x (major 1, up to {SCHEMA_VERSION}) and older minors" in message


def test_card_of_a_newer_minor_is_read_and_extra_keys_ignored(dataset):
    data = json.loads(dataset.card.to_json())
    data.update(schema_version="1.9", new_section={"x": 1})
    data["tokenizer"]["new_field"] = "y"
    card = DatasetCard.from_dict(data)
    assert card.schema_version == "1.9" and card.tokenizer == dataset.card.tokenizer


def test_malformed_card_is_a_schema_error():
    with pytest.raises(SchemaError, match="malformed"):
        DatasetCard.from_dict({"schema_version": "1.0", "tokenizer": {"preset": "x", "config_hash": "h"}})
    with pytest.raises(SchemaError, match="not valid JSON"):
        DatasetCard.from_json("{")


def test_write_then_read(dataset):
    changed = replace(dataset.card, description="rewritten")
    write_card(dataset.layout, changed)
    back = read_card(dataset.layout)
    assert replace(back, latent_stats=None) == replace(changed, latent_stats=None)
    np.testing.assert_allclose(back.latent_stats.std, changed.latent_stats.std, rtol=1e-12)


def test_hashes(tmp_path):
    assert hash_config({"b": 1, "a": [1, 2]}) == hash_config({"a": [1, 2], "b": 1})
    assert hash_config({"a": 1}) != hash_config({"a": 2})
    (tmp_path / "ckpt.pth").write_bytes(b"weights")
    assert sha256_file(str(tmp_path / "ckpt.pth"), chunk=3) == hashlib.sha256(b"weights").hexdigest()
