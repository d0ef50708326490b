import json
from dataclasses import replace

import numpy as np
import pytest

from losatok_data.card import write_card
from losatok_data.index import IndexRow, read_index, write_index_fragment
from losatok_data.ledger import FailureRecord, write_failures
from losatok_data.sample import decode_npy, encode_npy
from losatok_data.testing import fake_sample, rewrite_tar, write_fake_dataset
from losatok_data.verify import verify_dataset
from losatok_data.writer import write_shard


def faults(report):
    return [(f.where, f.message) for f in report.faults]


def test_good_dataset_passes(dataset):
    report = verify_dataset(dataset.url)
    assert report.ok and report.findings == []
    assert (report.shards, report.samples) == (2, 6)


def test_truncated_tar(dataset):
    path = dataset.layout.tar_path("latent", 1)
    data = dataset.layout.fs.cat_file(path)
    dataset.layout.fs.pipe_file(path, data[: len(data) // 2])
    report = verify_dataset(dataset.url)
    wheres = [w for w, _ in faults(report)]
    assert "latent/shard-000001.tar" in wheres
    assert any(
        "truncated" in m or "unreadable tar" in m for w, m in faults(report) if w == "latent/shard-000001.tar"
    )
    assert all("shard-000000" not in w for w in wheres)  # the good shard is not blamed


def test_tar_cut_at_a_member_boundary(dataset):
    # tarfile reads such a prefix as a shorter complete archive; the end marker check catches it.
    path = dataset.layout.tar_path("semantic", 0)
    data = dataset.layout.fs.cat_file(path)
    dataset.layout.fs.pipe_file(path, data[:1024])  # one header block and one data block
    report = verify_dataset(dataset.url)
    assert any(w == "semantic/shard-000000.tar" and "end-of-archive" in m for w, m in faults(report))


def test_mismatched_frame_count(dataset):
    def shorten(members):
        if members["__key__"] == "s0-2":
            members["logvar.npy"] = encode_npy(decode_npy(members["logvar.npy"])[:-1])
        return members

    rewrite_tar(dataset.layout, "latent", 0, shorten)
    found = [(w, m) for w, m in faults(verify_dataset(dataset.url)) if w.startswith("shard-")]
    assert len(found) == 1
    where, message = found[0]
    assert where == "shard-000000/s0-2" and "field 'logvar'" in message and "shape" in message


def test_mismatched_frame_count_in_the_semantic_group(dataset):
    def shorten(members):
        if members["__key__"] == "s1-0":
            members["semantic.npy"] = encode_npy(decode_npy(members["semantic.npy"])[:-2])
        return members

    rewrite_tar(dataset.layout, "semantic", 1, shorten)
    found = [(w, m) for w, m in faults(verify_dataset(dataset.url)) if w.startswith("shard-")]
    assert found and found[0][0] == "shard-000001/s1-0" and "field 'semantic'" in found[0][1]


def test_index_row_without_a_sample(dataset):
    for group in ("latent", "semantic"):
        rewrite_tar(dataset.layout, group, 1, lambda m: None if m["__key__"] == "s1-1" else m)
    found = faults(verify_dataset(dataset.url))
    assert ("shard-000001/s1-1", "index row without a sample in the tar") in found


def test_sample_without_an_index_row(dataset):
    rows = [
        IndexRow(**{**r, "fields": tuple(r["fields"])}) for r in read_index(dataset.layout, [0]).to_pylist()
    ]
    write_index_fragment(dataset.layout, 0, [r for r in rows if r.key != "s0-0"])
    found = faults(verify_dataset(dataset.url))
    assert ("shard-000000/s0-0", "sample without an index row") in found


def test_card_totals_disagree(dataset):
    card = dataset.card
    write_card(dataset.layout, replace(card, totals=replace(card.totals, samples=card.totals.samples + 1)))
    assert faults(verify_dataset(dataset.url)) == [
        ("card.json totals.samples", "card says 7; the dataset has 6")
    ]
    write_card(dataset.layout, replace(card, totals=replace(card.totals, hours=card.totals.hours * 2)))
    assert [w for w, _ in faults(verify_dataset(dataset.url))] == ["card.json totals.hours"]


def test_failure_counts_disagree(dataset):
    write_failures(dataset.layout, "writer-1", [FailureRecord("/x.wav", "encode", "EncodeFailure", "NaN")])
    found = faults(verify_dataset(dataset.url))
    assert [w for w, _ in found] == ["card.json failures"] and "'encode': 1" in found[0][1]


def test_index_disagrees_with_sample(dataset):
    rows = [
        IndexRow(**{**r, "fields": tuple(r["fields"])}) for r in read_index(dataset.layout, [1]).to_pylist()
    ]
    rows = [replace(r, frame_count=r.frame_count + 1) if r.key == "s1-0" else r for r in rows]
    write_index_fragment(dataset.layout, 1, rows)
    found = [(w, m) for w, m in faults(verify_dataset(dataset.url)) if w.startswith("shard-")]
    assert len(found) == 1 and found[0][0] == "shard-000001/s1-0" and "index frame_count" in found[0][1]


def test_sample_rate_and_frame_rate_come_from_the_card(dataset):
    write_card(dataset.layout, replace(dataset.card, sample_rate=24000, frame_rate=50.0))
    found = faults(verify_dataset(dataset.url))
    assert len(found) == 6 and all("disagree with" in m and "50.0 Hz" in m for _, m in found)


def test_newer_major_card_refused(dataset):
    data = json.loads(dataset.card.to_json())
    data["schema_version"] = "2.1"
    dataset.layout.fs.pipe_file(dataset.layout.card_path, json.dumps(data).encode())
    [(where, message)] = faults(verify_dataset(dataset.url))
    assert where == "card.json" and "schema version 2.1" in message and "reads 1.x" in message


def test_missing_card_and_missing_tar(dataset, tmp_path):
    assert [w for w, _ in faults(verify_dataset(str(tmp_path / "empty")))] == ["card.json"]
    dataset.layout.fs.rm(dataset.layout.tar_path("semantic", 1))
    found = faults(verify_dataset(dataset.url))
    assert ("semantic/shard-000001.tar" in [w for w, _ in found]) and any("missing" in m for _, m in found)


def test_duplicate_key_across_shards(tmp_path):
    ds = write_fake_dataset(str(tmp_path / "d"), n_shards=1, samples_per_shard=2, failures=0)
    rng = np.random.default_rng(5)
    write_shard(ds.layout, 1, [fake_sample("s0-0", 10, ds.card.fields, rng)], ds.card.fields)
    found = faults(verify_dataset(ds.url))
    assert ("shard-000001/s0-0", "key also in shard-000000") in found


def test_orphan_tar_and_temp_file_are_warnings(dataset):
    layout = dataset.layout
    layout.fs.pipe_file(layout.tar_path("latent", 9), layout.fs.cat_file(layout.tar_path("latent", 0)))
    layout.fs.pipe_file(f"{layout.root}/index/.shard-000009.parquet.tmp-abc", b"partial")
    report = verify_dataset(dataset.url)
    assert report.ok
    assert sorted(f.where for f in report.warnings) == [
        "index/.shard-000009.parquet.tmp-abc",
        "latent/shard-000009.tar",
    ]


@pytest.mark.parametrize("kind", ["index", "failures"])
def test_unreadable_parquet_fragment(dataset, kind):
    path = dataset.layout.index_path(0) if kind == "index" else dataset.layout.failures_path("writer-0")
    dataset.layout.fs.pipe_file(path, b"not parquet")
    assert any("unreadable" in m for _, m in faults(verify_dataset(dataset.url)))
