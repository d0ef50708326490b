"""The plain stage functions, without Ray."""

import numpy as np
import pytest
import torch

from losatok_data.ledger import FailureRecord
from losatok_input.decoder import load_audio
from losatok_input.sources import InputItem, input_key
from losatok_storage.retry import with_retries
from pipelines.config import FieldsConfig, ModelConfig, SegmentConfig
from pipelines.decode import decode_items
from pipelines.encode import BATCH_FRAMES, SegmentEncoder, batch_budget, build_model, frames_of, plan_batches
from pipelines.plan import make_units
from pipelines.records import EncodeFailure
from pipelines.segment import segment_bounds


def test_segments_lie_on_the_token_grid_and_cover_everything():
    for seconds in (0.7, 5, 30, 30.01, 61.3, 600):
        n = int(seconds * 16_000)
        bounds = segment_bounds(n, 16_000, max_seconds=30)
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        assert all(start % 640 == 0 for start, _ in bounds)
        assert all(end - start <= 30 * 16_000 + 640 for start, end in bounds)
    lengths = [e - s for s, e in segment_bounds(61 * 16_000, 16_000, 30)]
    assert len(lengths) == 3 and max(lengths) - min(lengths) <= 640  # near-equal, no tiny tail


def test_batches_respect_the_frame_budget_and_sort_by_length():
    counts = [10, 500, 40, 480, 30, 2000]
    batches = plan_batches(counts, max_frames=1000)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for batch in batches:
        longest = max(counts[i] for i in batch)
        assert len(batch) == 1 or longest * len(batch) <= 1000
        assert counts[batch[0]] == longest
    assert [5] in batches  # over budget alone


def test_keys_are_deterministic_safe_and_distinct():
    a = input_key("s3://bucket/x/a.b.wav")
    assert a == input_key("s3://bucket/x/a.b.wav")
    assert "." not in a and "/" not in a
    assert a != input_key("s3://bucket/y/a.b.wav")
    assert input_key("f.wav", 0.0, 1.0) != input_key("f.wav", 1.0, 2.0)


def test_units_split_by_count_and_bytes():
    items = [InputItem(f"k{i}", f"/x/{i}.wav", size_bytes=100) for i in range(10)]
    assert [len(u.items) for u in make_units(items, 4, 10_000)] == [4, 4, 2]
    assert [len(u.items) for u in make_units(items, 100, 250)] == [2, 2, 2, 2, 2]
    assert [u.index for u in make_units(items, 4, 10_000)] == [0, 1, 2]


def spans_of(name: str, count: int) -> list[InputItem]:
    return [InputItem(f"{name}{i}", f"/x/{name}.flac", 5.0 * i, 5.0 * i + 5.0) for i in range(count)]


def test_units_keep_the_spans_of_one_file_together():
    files = spans_of("a", 3) + spans_of("b", 6) + spans_of("c", 2)
    units = make_units(files, 4, 10_000)
    # a unit ends before a file's spans, not in their middle, and grows past 4 for b's 6 spans
    assert [[i.location[3] for i in u.items] for u in units] == [list("aaa"), list("bbbbbb"), list("cc")]
    assert [u.index for u in units] == [0, 1, 2]
    # whole files between them still fill units up to the count
    mixed = spans_of("a", 2) + [InputItem(f"w{i}", f"/x/w{i}.wav") for i in range(3)] + spans_of("b", 3)
    assert [len(u.items) for u in make_units(mixed, 4, 10_000)] == [4, 4]


def test_a_file_with_more_spans_than_a_unit_may_hold_is_cut_at_four_times_the_count():
    units = make_units(spans_of("long", 37), 4, 10_000)
    assert [len(u.items) for u in units] == [16, 16, 5]
    assert [i.key for u in units for i in u.items] == [f"long{i}" for i in range(37)]


def test_decode_segments_good_inputs_and_records_bad_ones(audio_dir, tmp_path):
    (tmp_path / "junk.wav").write_bytes(b"junk" * 200)
    (tmp_path / "empty.flac").write_bytes(b"")
    items = [
        InputItem("speech", str(audio_dir / "speech.mp3"), metadata={"text": "quick brown fox"}),
        InputItem("junk", str(tmp_path / "junk.wav")),
        InputItem("empty", str(tmp_path / "empty.flac")),
        InputItem("missing", str(tmp_path / "missing.wav")),
        InputItem("music", str(audio_dir / "music.flac"), start=0.5, end=1.5),
    ]
    segments, failures = decode_items(
        items, SegmentConfig(max_seconds=1.0, min_seconds=0.5), 16_000, {}, retries=2
    )
    assert {f.key for f in failures} == {"junk", "empty", "missing"}
    assert all(isinstance(f, FailureRecord) and f.message for f in failures)
    speech = [s for s in segments if s.input_key == "speech"]
    full = load_audio(audio_dir / "speech.mp3").numpy()
    np.testing.assert_array_equal(np.concatenate([s.wav for s in speech]), full)
    assert [s.key for s in speech] == [f"speech_{i:04d}" for i in range(len(speech))]
    assert speech[1].offset == pytest.approx(len(speech[0].wav) / 16_000)
    assert speech[0].metadata == {"text": "quick brown fox"}
    music = [s for s in segments if s.input_key == "music"]
    assert len(music) == 1 and music[0].offset == 0.5 and len(music[0].wav) == 16_000


def test_too_short_input_is_a_failure(tmp_path):
    from losatok_input.testing import write_float_wav

    write_float_wav(tmp_path / "blip.wav", [0.1] * 1600)  # 0.1 s
    segments, failures = decode_items(
        [InputItem("blip", str(tmp_path / "blip.wav"))], SegmentConfig(), 16_000, {}, 1
    )
    assert not segments and failures[0].error_type == "TooShort"


def test_transient_errors_are_retried_then_reported():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("connection reset")
        return "data"

    assert with_retries(flaky, retries=3, base_delay=0.0) == ("data", 3)
    with pytest.raises(FileNotFoundError):  # permanent: no retry
        with_retries(lambda: (_ for _ in ()).throw(FileNotFoundError("gone")), retries=5, base_delay=0.0)


def test_encoder_outputs_equal_direct_encoding():
    model_cfg = ModelConfig(preset="tiny", seed=7)
    encoder = SegmentEncoder(
        model_cfg, FieldsConfig(logvar=True, semantic=True, dtype="float32"), max_frames=200
    )
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16_000, 3_000, 40_000, 9_000)]
    results = encoder.encode(waves)
    reference = build_model(model_cfg)
    for wave, result in zip(waves, results):
        alone = reference.encode(torch.from_numpy(wave)).item(0)
        assert result.frames == frames_of(len(wave)) == alone["z"].shape[0]
        np.testing.assert_allclose(result.arrays["latent"], alone["z"].numpy(), atol=1e-4)
        np.testing.assert_allclose(result.arrays["semantic"], alone["semantic_high"].numpy(), atol=1e-4)
        assert set(result.arrays) == {"latent", "logvar", "semantic_low", "semantic"}


def test_encoder_reports_float16_overflow_instead_of_storing_inf():
    encoder = SegmentEncoder(ModelConfig(preset="tiny"), FieldsConfig(), max_frames=1000)
    with torch.no_grad():
        encoder.model.fc_mu.bias.fill_(1e6)
    (result,) = encoder.encode([np.zeros(16_000, np.float32)])
    assert isinstance(result, EncodeFailure) and "overflows float16" in str(result)


def test_batch_budget_defaults_by_device_and_a_given_one_is_kept():
    # a CPU encodes fastest in batches of ~30 s of audio, a GPU in large ones (BATCH_FRAMES)
    assert SegmentEncoder(ModelConfig(preset="tiny"), FieldsConfig()).max_frames == BATCH_FRAMES["cpu"]
    assert batch_budget(None, torch.device("cuda")) == BATCH_FRAMES["cuda"] > BATCH_FRAMES["cpu"]
    assert batch_budget(1234, torch.device("cpu")) == batch_budget(1234, torch.device("cuda")) == 1234
    # the budget shapes the batches: 40 one-second segments are 2 batches on CPU by default
    assert len(plan_batches([frames_of(16_000)] * 40, BATCH_FRAMES["cpu"])) == 2
