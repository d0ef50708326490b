import pytest

from losatok_data.errors import SchemaError
from losatok_data.fields import SEMANTIC_GROUP, FieldSet, FieldSpec, default_fields


def test_official_defaults_describe_the_published_model():
    fields = default_fields()
    assert fields.names() == ["latent", "semantic_low"]
    assert fields["latent"].frame_shape == (128,) and fields["latent"].dtype == "float16"
    full = default_fields(logvar=True, semantic=True)
    assert full["semantic"].frame_shape == (1280,) and full["semantic"].group == SEMANTIC_GROUP
    assert full.groups() == ["latent", "semantic"]
    assert full["semantic"].bytes_per_frame() == 10 * full["latent"].bytes_per_frame()


def test_widths_are_parameters():
    fields = default_fields(16, 64, semantic=True, dtype="float32")
    assert fields["semantic_low"].frame_shape == (16,) and fields["semantic"].frame_shape == (64,)
    assert fields["latent"].dtype == "float32"


def test_spec_round_trips_through_dict():
    spec = FieldSpec("semantic", "float32", (64,), group=SEMANTIC_GROUP, required=False)
    assert FieldSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "semantic.low"},  # a dot would break the WebDataset key split
        {"name": "latent", "dtype": "int8"},
        {"name": "latent", "group": "audio"},
        {"name": "latent", "frame_shape": (0,)},
    ],
)
def test_bad_specs_refused(kwargs):
    with pytest.raises(SchemaError):
        FieldSpec(**kwargs)


def test_field_set_needs_a_unique_latent():
    with pytest.raises(SchemaError, match="latent"):
        FieldSet((FieldSpec("semantic_low"),))
    with pytest.raises(SchemaError, match="repeat"):
        FieldSet((FieldSpec("latent"), FieldSpec("latent")))
