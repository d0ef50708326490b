"""The stored plan: generations appended from fresh listings, partitions, references, leftovers."""

from __future__ import annotations

import fsspec
import pyarrow.parquet as pq
import pytest

from losatok_input.sources import InputItem, input_key
from pipelines import plan as plan_module
from pipelines.plan import PlanStore, load_unit, make_units, plan_table


def items(names: list[str], folder: str = "/corpus") -> list[InputItem]:
    return [InputItem(input_key(f"{folder}/{n}.wav"), f"{folder}/{n}.wav", size_bytes=10) for n in names]


def append(store: PlanStore, listing: list[InputItem], source: str = "/corpus", **kw):
    return store.append(
        iter(listing), source=source, source_kind="dir", run_id="run", inputs_per_shard=2,
        shard_input_bytes=1 << 30, **kw,
    )  # fmt: skip


def planned(store: PlanStore) -> dict[int, list[str]]:
    """unit -> locations, read back through the references a worker gets."""
    fs, root = store.fs, store.root
    return {
        ref.index: [i.location for i in load_unit(f"{root}/{ref.partition}", {}, ref.index).items]
        for ref in store.pending(set())
        if fs.exists(f"{root}/{ref.partition}")
    }


@pytest.fixture
def store(tmp_path) -> PlanStore:
    return PlanStore(fsspec.filesystem("file"), str(tmp_path / "ds"))


def test_appends_plan_only_new_inputs_numbered_after_every_earlier_unit(store):
    first = append(store, items(["a", "b", "c"]))
    assert first.generation.number == 1 and (first.inputs_new, first.units_new) == (3, 2)
    again = append(store, items(["a", "b", "c"]))
    assert again.generation is None and again.inputs_listed == 3 and again.inputs_new == 0
    grown = append(store, items(["a", "b", "c", "d", "e", "f"]))
    assert grown.generation.number == 2 and grown.generation.first_unit == 2 and grown.inputs_new == 3
    assert planned(store) == {
        0: ["/corpus/a.wav", "/corpus/b.wav"],
        1: ["/corpus/c.wav"],
        2: ["/corpus/d.wav", "/corpus/e.wav"],
        3: ["/corpus/f.wav"],
    }
    assert [r.index for r in store.pending({0, 2})] == [1, 3]


def test_inputs_gone_from_the_source_are_reported_and_kept(store):
    append(store, items(["a", "b", "c", "d"]))
    report = append(store, items(["a", "c", "e"]))
    assert report.inputs_missing == 2 and report.missing_examples == ["/corpus/b.wav", "/corpus/d.wav"]
    assert report.generation.inputs_missing == 2
    assert sum(len(v) for v in planned(store).values()) == 5  # b and d are still planned (and kept)


def test_another_source_is_an_append_from_it_not_a_relabel(store):
    append(store, items(["a", "b"]))
    report = append(store, items(["x"], folder="/elsewhere"), source="/elsewhere")
    # the first source's inputs are not "missing": the new source never held them
    assert report.inputs_missing == 0 and report.generation.source == "/elsewhere"
    assert [(g.number, g.source) for g in store.generations()] == [(1, "/corpus"), (2, "/elsewhere")]


def test_dry_run_counts_and_writes_nothing(store, tmp_path):
    append(store, items(["a", "b"]))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    report = append(store, items(["a", "b", "c", "d", "e"]), dry_run=True)
    assert (report.inputs_new, report.units_new, report.generation) == (3, 2, None)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_key_listed_twice_is_refused_and_nothing_is_stored(store, tmp_path):
    twice = items(["a", "b"]) + items(["a"])
    with pytest.raises(ValueError, match="share the key"):
        append(store, twice)
    assert store.generations() == [] and not list((tmp_path / "ds").rglob("*.parquet"))
    append(store, items(["a"]))
    with pytest.raises(ValueError, match="lists the input /corpus/a.wav"):
        append(store, items(["a", "a"]))


def test_partitions_hold_whole_units_and_workers_read_one_unit(store, monkeypatch):
    monkeypatch.setattr(plan_module, "PARTITION_ROWS", 5)
    monkeypatch.setattr(plan_module, "LISTING_BATCH", 3)
    report = append(store, items([f"f{i:02d}" for i in range(23)]))
    parts = report.generation.partitions
    assert len(parts) == 4 and [p.rows for p in parts] == [6, 6, 6, 5]
    assert all(p.rows % 2 == 0 or p is parts[-1] for p in parts)  # never a unit split across files
    assert sum(len(v) for v in planned(store).values()) == 23
    assert planned(store)[11] == ["/corpus/f22.wav"]


def test_a_killed_plan_write_leaves_nothing_the_next_run_trusts(store, tmp_path, monkeypatch):
    monkeypatch.setattr(plan_module, "PARTITION_ROWS", 2)

    def dies():
        yield from items(["a", "b", "c", "d"])
        raise KeyboardInterrupt  # a listing cut short

    with pytest.raises(KeyboardInterrupt):
        append(store, dies())
    assert store.generations() == [] and store.pending(set()) == []
    # a partition written before a SIGKILL (no generation record) is removed and planned again
    plan_module.write_partition(store.fs, f"{store.root}/plan/gen-000001/part-000000.parquet", [])
    assert store.remove_uncommitted() and not (tmp_path / "ds" / "plan" / "gen-000001").exists()
    assert append(store, items(["a", "b"])).generation.number == 1


def test_a_plan_written_before_generations_reads_as_generation_one(store, tmp_path):
    (tmp_path / "ds").mkdir()
    table = plan_table(make_units(items(["a", "b", "c"]), 2, 1 << 30)).drop_columns(["key_hash"])
    pq.write_table(table, tmp_path / "ds" / "plan.parquet")
    legacy = PlanStore(store.fs, store.root, legacy_source="/corpus")
    report = append(legacy, items(["a", "b", "c", "d"]))
    assert report.inputs_new == 1 and report.generation.number == 2 and report.generation.first_unit == 2
    assert [len(v) for v in planned(legacy).values()] == [2, 1, 1]


def plan_three_generations(store: PlanStore) -> tuple[list[tuple], dict[int, list[str]]]:
    """Reports of appends that plan, append another source, drop and add inputs, then a dry run."""
    names = [f"f{i:03d}" for i in range(60)]
    reports = [
        append(store, items(names[:40])),
        append(store, items(["x", "y"], folder="/elsewhere"), source="/elsewhere"),
        append(store, items(names[50:] + names[10:15] + names[30:45][::-1])),  # 25 of the first gone
        append(store, items(names[::-1]), dry_run=True),
    ]
    found = [
        (r.inputs_listed, r.inputs_new, r.units_new, r.inputs_missing, r.missing_examples,
         r.generation.partitions if r.generation else None)
        for r in reports
    ]  # fmt: skip
    return found, planned(store)


def test_many_buckets_plan_exactly_what_one_bucket_plans(tmp_path, monkeypatch):
    from pipelines import spill

    monkeypatch.setattr(plan_module, "LISTING_BATCH", 3)  # batches that straddle the bitmap's bytes
    buckets = []
    monkeypatch.setattr(spill, "sort_bucket", lambda e, sort=spill.sort_bucket: buckets.append(1) or sort(e))
    one = plan_three_generations(PlanStore(fsspec.filesystem("file"), str(tmp_path / "one")))
    assert len(buckets) == 4  # one bucket per append
    monkeypatch.setattr(spill, "BUCKET_ENTRIES", 2)
    monkeypatch.setattr(spill, "SCATTER_ENTRIES", 7)
    many = plan_three_generations(PlanStore(fsspec.filesystem("file"), str(tmp_path / "many")))
    assert len(buckets) > 4 + 100  # 40 + 42 + 72 + 132 entries, two per bucket
    assert many == one
    reports, units = one
    assert reports[2][:5] == (30, 15, 8, 25, [f"/corpus/f{i:03d}.wav" for i in range(5)])
    assert [units[25], units[26]] == [  # listing order: f050-f059, then f044 down
        ["/corpus/f058.wav", "/corpus/f059.wav"],
        ["/corpus/f044.wav", "/corpus/f043.wav"],
    ]
    assert reports[3][:4] == (60, 5, 3, 0)  # f045-f049, never listed before


@pytest.mark.parametrize("bucket_entries", [2, 1_000_000])
def test_the_first_key_listed_twice_is_named_whatever_the_buckets(store, monkeypatch, bucket_entries):
    from pipelines import spill

    monkeypatch.setattr(spill, "BUCKET_ENTRIES", bucket_entries)
    append(store, items(["old", "older"]))
    with pytest.raises(ValueError, match="^inputs /corpus/b.wav and /corpus/b.wav share the key b-"):
        append(store, items(["a", "b", "old", "c", "b", "old", "a"]))
    with pytest.raises(ValueError, match="^the source lists the input /corpus/old.wav .* twice"):
        append(store, items(["a", "b", "old", "c", "old", "b", "a"]))
    assert len(store.generations()) == 1


def test_temporary_files_go_after_success_and_after_an_error(store, tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    held = []

    def listing(names, then=None):
        yield from items(names)
        held.append(sorted(p.name for p in scratch.rglob("*") if p.is_file()))
        if then:
            raise then

    append(store, listing(["a", "b"]))
    assert held[-1] == ["entries.bin", "listed.arrow"] and not list(scratch.iterdir())
    with pytest.raises(ValueError, match="share the key"):
        append(store, listing(["c", "c"]))
    assert not list(scratch.iterdir())
    with pytest.raises(KeyboardInterrupt):
        append(store, listing(["d"], then=KeyboardInterrupt))
    assert held[-1] and not list(scratch.iterdir())
    assert len(store.generations()) == 1


def test_a_source_carrying_credentials_is_stored_without_them(store, tmp_path):
    signed = "https://user:hunter2@data.example/corpus?X-Amz-Signature=abc123&part=1"
    first = append(store, items(["a"]), source=signed)
    assert "hunter2" not in first.generation.source and "abc123" not in first.generation.source
    stored = b"".join(p.read_bytes() for p in (tmp_path / "ds").rglob("*") if p.is_file())
    assert b"hunter2" not in stored and b"abc123" not in stored
    again = append(store, items(["b"]), source=signed)  # the same source, compared redacted
    assert again.inputs_missing == 1 and again.missing_examples == ["/corpus/a.wav"]
