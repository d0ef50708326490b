"""Units committed in windows (`ShardCommitter.commit_window`): parts kept under `parts/`, the
shard assembled once every window is there, equal byte for byte to a shard written in one go.
Real files in tmp_path; no Ray (the commit stage is plain Python)."""

from __future__ import annotations

import datetime as dt
import io
import threading
from pathlib import Path

import numpy as np
import pytest

from losatok_data.card import read_card
from losatok_data.index import read_index
from losatok_data.layout import DatasetLayout
from losatok_data.ledger import FailureRecord, read_failures
from losatok_data.reader import DatasetReader
from losatok_data.testing import tiny_fields, tiny_tokenizer
from losatok_data.verify import verify_dataset
from losatok_input.items import InputItem
from losatok_storage.filesystem import RetryingFileSystem
from losatok_storage.tario import iter_tar_samples
from pipelines.commit import PARTS_DIR, ShardCommitter, commit_stage, copy_range
from pipelines.finalise import DatasetFinaliser
from pipelines.plan import RunIdentity, Unit
from pipelines.records import EncodedSegment, EncodeFailure, Segment, StageStats, UnitSummary, pack_payload
from pipelines.sink import SinkDataset

FIELDS = tiny_fields()  # latent group (latent, logvar, semantic_low, json) and semantic group
SAMPLE_RATE = 16_000  # Hz
FRAME_RATE = 25.0  # latent frames per second
UNIT = 12
LONG_KEY = "a" * 120  # member names past tar's 100 characters: each member gets a PAX header
WINDOWS = (slice(0, 3), slice(3, 5), slice(5, 7))  # 7 segments in 3 windows


def make_unit() -> Unit:
    """Two long inputs, as a unit the decode stage would cut into windows."""
    return Unit(
        UNIT,
        (
            InputItem(key="talk-0f3a", location="/corpus/talk.flac", metadata={"speaker": "ann"}),
            InputItem(key=f"{LONG_KEY}-9c1d", location="/corpus/radio.flac"),
        ),
    )


def make_encoded(unit: Unit, seed: int = 0) -> list[tuple[Segment, EncodedSegment]]:
    """Seven segments (four of the first input, three of the second) and random latents,
    in the storage dtype, as the encode stage hands them on."""
    rng = np.random.default_rng(seed)
    out = []
    for item, count in zip(unit.items, (4, 3), strict=True):
        for j in range(count):
            frames = int(rng.integers(3, 30))
            segment = Segment(
                key=f"{item.key}_{j:04d}",
                input_key=item.key,
                location=item.location,
                offset=10.0 * j,
                wav=np.empty(0, np.float32),  # the commit stage gets no audio
                sample_rate=SAMPLE_RATE,
                metadata=dict(item.metadata),
                num_samples=frames * SAMPLE_RATE // int(FRAME_RATE),
                measures={"rms_db": -20.0 - j, "peak": 0.5, "content_hash": f"{seed}{j:03x}"},
            )
            arrays = {
                s.name: rng.standard_normal((frames, *s.frame_shape)).astype(s.dtype) for s in FIELDS
            }  # (frames, dim) each
            out.append((segment, EncodedSegment(arrays, frames)))
    return out


def committer_at(path: Path) -> ShardCommitter:
    return ShardCommitter(DatasetLayout(str(path)), FIELDS, FRAME_RATE)


def shard_files(layout: DatasetLayout) -> dict[str, bytes]:
    """Every file of shard UNIT outside the parts folder: tars, stats, index, ledger fragment."""
    paths = [layout.tar_path(g, UNIT) for g in FIELDS.groups()]
    paths += [layout.stats_path(UNIT), layout.index_path(UNIT), layout.failures_path("shard-000012")]
    return {p.removeprefix(layout.root): layout.fs.cat_file(p) for p in paths if layout.fs.exists(p)}


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def commit_windows(committer: ShardCommitter, unit: Unit, encoded, order=(0, 1, 2), failures=None):
    rows = []
    for w in order:
        stages = StageStats(decode_node=f"node-{w}")
        part = (failures or {}).get(w, [])
        rows += committer.commit_window(unit, w, w == len(WINDOWS) - 1, encoded[WINDOWS[w]], part, stages)
    return rows


def test_windows_out_of_order_make_the_shard_one_commit_makes_byte_for_byte(tmp_path):
    unit, encoded = make_unit(), make_encoded(make_unit())
    direct, windowed = committer_at(tmp_path / "direct"), committer_at(tmp_path / "windowed")
    whole = direct.commit_unit(unit, encoded, [])

    rows = []
    for w in (2, 0, 1):
        assert not windowed.layout.committed_shards()  # no index fragment until the last part
        rows += commit_windows(windowed, unit, encoded, order=(w,))
    assert list(windowed.layout.committed_shards()) == [UNIT]

    # tars (tarfile writes deterministic bytes: fixed mtime, mode, owner), stats, index
    assert shard_files(windowed.layout) == shard_files(direct.layout)
    assert read_index(windowed.layout).to_pylist() == read_index(direct.layout).to_pylist()
    complete = [r for r in rows if r.complete]
    assert complete == [whole]  # one assembler; counts of the whole unit, no stages
    partial = [r for r in rows if not r.complete]
    assert [r.stages.decode_node for r in partial] == ["node-2", "node-0", "node-1"]
    assert all((r.samples, r.inputs, r.bytes, r.audio_seconds) == (0, 0, 0, 0.0) for r in partial)


def test_a_window_delivered_again_changes_nothing(tmp_path):
    unit, encoded = make_unit(), make_encoded(make_unit())
    committer = committer_at(tmp_path / "ds")
    commit_windows(committer, unit, encoded, order=(0,))
    before = snapshot(tmp_path / "ds")
    again = commit_windows(committer, unit, encoded, order=(0,))  # a retried task, not assembled yet
    assert snapshot(tmp_path / "ds") == before
    assert [r.complete for r in again] == [False]

    rows = commit_windows(committer, unit, encoded, order=(2, 1))
    assert [r.complete for r in rows] == [False, False, True]
    committed = snapshot(tmp_path / "ds")
    late = commit_windows(committer, unit, encoded, order=(1, 2))  # after the unit is committed
    assert snapshot(tmp_path / "ds") == committed
    assert [r.complete for r in late] == [False, False]

    direct = committer_at(tmp_path / "direct")
    direct.commit_unit(unit, encoded, [])
    assert shard_files(committer.layout) == shard_files(direct.layout)


def test_two_assemblers_at_once_leave_a_correct_shard(tmp_path):
    unit, encoded = make_unit(), make_encoded(make_unit())
    first, second = committer_at(tmp_path / "ds"), committer_at(tmp_path / "ds")
    commit_windows(first, unit, encoded)
    layout = first.layout
    expected = shard_files(layout)
    # as if the actor that sent the last part died before assembling: every part, no shard
    for path in shard_files(layout):
        layout.fs.rm(layout.root + path)
    assert first.windows_ready(UNIT) == 3 and not layout.committed_shards()

    start, results, errors = threading.Barrier(2), [], []

    def assemble(committer: ShardCommitter) -> None:
        start.wait()
        try:  # small, unaligned reads: the two copies interleave
            results.append(committer.assemble(unit, 3, chunk_bytes=1000))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=assemble, args=(c,)) for c in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results[0] == results[1]
    assert shard_files(layout) == expected
    assert not [p for p in snapshot(tmp_path / "ds") if ".tmp-" in p]


def test_assembled_dataset_verifies_and_reads_back_every_sample(tmp_path):
    unit, encoded = make_unit(), make_encoded(make_unit())
    committer = committer_at(tmp_path / "ds")
    commit_windows(committer, unit, encoded, order=(1, 2, 0))
    layout = committer.layout
    for group in FIELDS.groups():  # one end-of-archive marker: a strict stream read sees every sample
        with layout.fs.open(layout.tar_path(group, UNIT), "rb") as f:
            assert [m["__key__"] for m in iter_tar_samples(f)] == [s.key for s, _ in encoded]

    identity = RunIdentity(tokenizer={**tiny_tokenizer().__dict__}, seed=0, fields={}, segment={})
    DatasetFinaliser(layout, FIELDS, SAMPLE_RATE, FRAME_RATE).rebuild_card(identity)
    report = verify_dataset(layout.url)
    assert report.ok and not report.warnings, report.findings
    assert report.samples == len(encoded)

    reader = DatasetReader(layout, read_card(layout))
    samples = list(reader.iter_samples(groups=FIELDS.groups()))
    assert [s.key for s in samples] == [s.key for s, _ in encoded]
    for sample, (segment, result) in zip(samples, encoded, strict=True):
        assert (
            sample.metadata.offset == segment.offset and sample.metadata.rms_db == segment.measures["rms_db"]
        )
        for name, array in result.arrays.items():
            np.testing.assert_array_equal(sample.arrays[name], array)


def test_failures_of_two_windows_land_in_the_ledger_once(tmp_path):
    unit, encoded = make_unit(), make_encoded(make_unit())
    committer = committer_at(tmp_path / "ds")
    decode_failure = FailureRecord(
        "/corpus/talk.flac", "decode", "DecodeError", "bad frame", key="talk-0f3a", transient=True,
        time=dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.timezone.utc),
    )  # fmt: skip

    def payload(w: int) -> bytes:
        segments = [s for s, _ in encoded[WINDOWS[w]]]
        results: list = [r for _, r in encoded[WINDOWS[w]]]
        if w == 2:
            results[-1] = EncodeFailure("NaN in the latents")  # the commit stage records it
        failures = [decode_failure] if w == 0 else []
        return pack_payload((unit, w, w == 2, segments, results, failures, StageStats()))

    rows = []
    for w in (0, 2, 0, 1):  # window 0 twice
        batch = commit_stage({"payload": [payload(w)]}, committer)
        rows += [UnitSummary.from_row({"summary": s}) for s in batch["summary"]]

    ledger = read_failures(committer.layout).to_pylist()
    assert sorted((r["stage"], r["key"], r["writer"], r["transient"]) for r in ledger) == [
        ("decode", "talk-0f3a", "shard-000012", True),
        ("encode", encoded[6][0].key, "shard-000012", False),
    ]
    assert [r for r in ledger if r["stage"] == "decode"][0]["time"] == decode_failure.time
    (complete,) = [r for r in rows if r.complete]
    assert (complete.failures, complete.transient, complete.samples, complete.inputs) == (2, 1, 6, 2)
    assert len(read_index(committer.layout)) == 6  # the sample that failed to encode left out


def test_a_whole_unit_payload_commits_at_once_without_parts(tmp_path):
    unit, encoded = make_unit(), make_encoded(make_unit())
    committer = committer_at(tmp_path / "ds")
    blob = pack_payload((unit, 0, True, [s for s, _ in encoded], [r for _, r in encoded], [], StageStats()))
    (row,) = commit_stage({"payload": [blob]}, committer)["summary"]
    assert UnitSummary.from_row({"summary": row}).complete
    assert list(committer.layout.committed_shards()) == [UNIT]
    assert not (tmp_path / "ds" / PARTS_DIR).exists()


def sink_at(path: Path) -> SinkDataset:
    return SinkDataset(DatasetLayout(str(path)), FIELDS, SAMPLE_RATE, FRAME_RATE)


def test_remove_uncommitted_drops_parts_of_a_shard_not_committed(tmp_path):
    unit, encoded = make_unit(), make_encoded(make_unit())
    committer = committer_at(tmp_path / "ds")
    commit_windows(committer, unit, encoded, order=(0, 2))  # window 1 never came: a killed run
    parts = sorted(str(p) for p in (tmp_path / "ds" / PARTS_DIR).rglob("*") if p.is_file())
    assert len(parts) == 2 * (len(FIELDS.groups()) + 1)  # two windows: their tars and manifests

    removed = sink_at(tmp_path / "ds").remove_uncommitted()
    assert sorted(removed) == parts
    assert not (tmp_path / "ds" / PARTS_DIR).exists()
    assert snapshot(tmp_path / "ds") == {}

    commit_windows(committer, unit, encoded)  # the next run encodes the unit again, whole
    assert list(committer.layout.committed_shards()) == [UNIT]


def test_remove_parts_drops_the_leftovers_of_a_committed_shard(tmp_path):
    unit, encoded = make_unit(), make_encoded(make_unit())
    committer = committer_at(tmp_path / "ds")
    commit_windows(committer, unit, encoded)
    shard = shard_files(committer.layout)
    sink = sink_at(tmp_path / "ds")

    removed = sink.remove_parts()
    assert len(removed) == 3 * (len(FIELDS.groups()) + 1)
    assert not (tmp_path / "ds" / PARTS_DIR).exists()
    assert shard_files(committer.layout) == shard  # the shard itself stays
    assert sink.remove_parts() == []  # nothing left: nothing to do
    assert sink.remove_uncommitted() == []


class RecordingFileSystem(RetryingFileSystem):
    """The real local filesystem, noting the byte ranges read through `cat_file`."""

    def __init__(self, fs: RetryingFileSystem) -> None:
        super().__init__(fs.raw, fs.policy)
        self.ranges: list[tuple[int, int]] = []

    def cat_file(self, path: str, *args, **kwargs) -> bytes:
        self.ranges.append((kwargs.get("start"), kwargs.get("end")))
        return super().cat_file(path, *args, **kwargs)


@pytest.mark.parametrize("chunk_bytes", [1000, 4096])
def test_parts_are_copied_a_chunk_at_a_time(tmp_path, chunk_bytes):
    data = np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    (tmp_path / "part.tar").write_bytes(data)
    fs = RecordingFileSystem(DatasetLayout(str(tmp_path)).fs)
    out = io.BytesIO()

    assert copy_range(fs, str(tmp_path / "part.tar"), out, 40_000, chunk_bytes) == 40_000
    assert out.getvalue() == data[:40_000]
    assert max(end - start for start, end in fs.ranges) <= chunk_bytes  # never the whole part
    assert len(fs.ranges) == -(-40_000 // chunk_bytes)
    with pytest.raises(OSError, match="bytes where"):  # a part shorter than its manifest says
        copy_range(fs, str(tmp_path / "part.tar"), io.BytesIO(), 60_000, chunk_bytes)
