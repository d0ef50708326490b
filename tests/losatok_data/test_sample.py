import json
from dataclasses import replace

import numpy as np
import pytest

from losatok_data.errors import SampleValidationError
from losatok_data.sample import (
    LatentSample,
    SampleMetadata,
    decode_npy,
    decode_sample,
    encode_npy,
    encode_sample,
    validate_sample,
)
from losatok_data.testing import fake_sample


def test_encode_decode_round_trip_field_by_field(fields, rng):
    sample = fake_sample("utt-1", 30, fields, rng, speaker="spk", tags=("a", "b"), extra={"corpus": "x"})
    members = encode_sample(sample, fields, frame_rate=25.0)
    assert set(members) == {"__key__", "latent.npy", "logvar.npy", "semantic_low.npy", "semantic.npy", "json"}
    decoded = decode_sample(members, fields, frame_rate=25.0)
    assert decoded.key == "utt-1" and decoded.metadata == sample.metadata
    for name, array in sample.arrays.items():
        stored = decoded.arrays[name]
        assert stored.dtype == np.float16 and stored.shape == array.shape
        np.testing.assert_array_equal(stored, array.astype(np.float16))


def test_json_member_is_plain_metadata(fields, rng):
    sample = fake_sample("k", 10, fields, rng)
    meta = json.loads(encode_sample(sample, fields)["json"])
    assert meta == {
        "source": "/corpus/k.flac",
        "offset": 0.0,
        "duration": 0.4,
        "sample_rate": 16000,
        "frame_count": 10,
        "text": "text of k",
    }


def test_unknown_metadata_keys_of_a_newer_minor_are_ignored():
    meta = SampleMetadata.from_dict(
        {"source": "a", "offset": 0, "duration": 1.0, "sample_rate": 16000, "frame_count": 25, "mood": "calm"}
    )
    assert meta.frame_count == 25 and meta.text is None


def test_npy_refuses_pickle():
    objects = np.array([{"a": 1}], dtype=object)
    with pytest.raises(ValueError):
        encode_npy(objects)
    import io

    buffer = io.BytesIO()
    np.save(buffer, objects, allow_pickle=True)
    with pytest.raises(ValueError, match="pickle"):
        decode_npy(buffer.getvalue())


def test_pickled_member_is_a_validation_error(fields, rng):
    import io

    members = encode_sample(fake_sample("k", 10, fields, rng), fields)
    buffer = io.BytesIO()
    np.save(buffer, np.array([object()], dtype=object), allow_pickle=True)
    members["logvar.npy"] = buffer.getvalue()
    with pytest.raises(SampleValidationError, match="'k', field 'logvar'.*pickle"):
        decode_sample(members, fields)


def test_frame_count_mismatch_across_fields_names_key_and_field(fields, rng):
    members = encode_sample(fake_sample("k", 10, fields, rng), fields)
    members["semantic_low.npy"] = encode_npy(np.zeros((9, 16), np.float16))
    with pytest.raises(SampleValidationError) as info:
        decode_sample(members, fields)
    assert (info.value.key, info.value.field) == ("k", "semantic_low")
    assert "(9, 16)" in str(info.value) and "(10, 16)" in str(info.value)


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (lambda a: a.astype(np.float32), "latent", "dtype float32"),
        (lambda a: a[:, :8], "latent", "shape"),
        (
            lambda a: np.where(np.arange(a.shape[0])[:, None] == 0, np.inf, a).astype(a.dtype),
            "latent",
            "NaN or inf",
        ),
    ],
)
def test_decode_checks_dtype_shape_finiteness(fields, rng, change, field, words):
    members = encode_sample(fake_sample("k", 10, fields, rng), fields)
    members["latent.npy"] = encode_npy(change(decode_npy(members["latent.npy"])))
    with pytest.raises(SampleValidationError, match=words) as info:
        decode_sample(members, fields)
    assert info.value.field == field


def test_encode_casts_then_catches_fp16_overflow(fields, rng):
    sample = fake_sample("k", 10, fields, rng)
    huge = dict(sample.arrays, latent=np.full((10, 16), 1e6, np.float32))  # beyond fp16's 65504
    with pytest.raises(SampleValidationError, match="inf"):
        encode_sample(replace(sample, arrays=huge), fields)


def test_required_field_and_unknown_member(fields, rng):
    sample = fake_sample("k", 10, fields, rng)
    without = {k: v for k, v in sample.arrays.items() if k != "semantic_low"}
    with pytest.raises(SampleValidationError, match="'semantic_low': required"):
        encode_sample(replace(sample, arrays=without), fields)
    members = encode_sample(sample, fields)
    members["pitch.npy"] = members["latent.npy"]
    with pytest.raises(SampleValidationError, match="'pitch.npy': unexpected member"):
        decode_sample(members, fields)


def test_semantic_group_required_only_when_asked(fields, rng):
    members = encode_sample(fake_sample("k", 10, fields, rng), fields)
    del members["semantic.npy"]
    assert decode_sample(members, fields).semantic is None  # a latent-only reader
    with pytest.raises(SampleValidationError, match="'semantic': required"):
        decode_sample(members, fields, groups=["latent", "semantic"])


def test_duration_must_agree_with_frames_at_the_frame_rate(fields, rng):
    sample = fake_sample("k", 50, fields, rng)  # 2.0 s at 25 Hz
    encode_sample(replace(sample, metadata=replace(sample.metadata, duration=2.03)), fields, frame_rate=25.0)
    bad = replace(sample, metadata=replace(sample.metadata, duration=2.5))
    with pytest.raises(SampleValidationError, match="'json.frame_count'.*2.5 s at 25.0 Hz"):
        encode_sample(bad, fields, frame_rate=25.0)
    encode_sample(bad, fields)  # without a frame rate there is nothing to check it against


@pytest.mark.parametrize("key", ["a.b", "a/b", "", "a b", "x" * 161])
def test_unsafe_keys_refused(fields, rng, key):
    sample = fake_sample("ok", 5, fields, rng)
    with pytest.raises(SampleValidationError, match="__key__"):
        validate_sample(LatentSample(key, sample.metadata, sample.arrays), fields)


@pytest.mark.parametrize(
    ("meta", "field"),
    [
        ({"frame_count": 0}, "json.frame_count"),
        ({"duration": float("nan")}, "json.duration"),
        ({"sample_rate": 0}, "json.sample_rate"),
    ],
)
def test_bad_metadata_named(fields, rng, meta, field):
    sample = fake_sample("k", 5, fields, rng)
    with pytest.raises(SampleValidationError) as info:
        validate_sample(replace(sample, metadata=replace(sample.metadata, **meta)), fields)
    assert info.value.field == field
