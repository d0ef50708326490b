"""Integrity: member checksums in the index, stats fragments merged into the card, and
`losatok-data verify` (full and --quick) naming the file for every kind of tampering."""

import hashlib
import json
import zlib
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from losatok_data.card import read_card, write_card
from losatok_data.cli import main
from losatok_data.index import (
    KIND_KEY,
    VERSION_KEY,
    IndexRow,
    read_index,
    summarise_shards,
    write_index_fragment,
    write_shard_summary,
)
from losatok_data.ledger import FailureRecord, write_failures
from losatok_data.reader import open_dataset
from losatok_data.sample import decode_npy, encode_npy
from losatok_data.stats import ChannelStats, read_stats_fragment
from losatok_data.testing import fake_sample, rewrite_tar, write_fake_dataset
from losatok_data.verify import NOTE, verify_dataset
from losatok_data.writer import write_shard


def faults(report):
    return [(f.where, f.message) for f in report.faults]


def _nudge_latent(members):
    # a finite change, same shape and dtype: only a checksum tells it from the original
    if members["__key__"] == "s0-1":
        latent = decode_npy(members["latent.npy"]).copy()
        latent[2, 3] += np.float16(0.5)
        members["latent.npy"] = encode_npy(latent)
    return members


def test_index_holds_the_crc32_of_every_member(tmp_path, fields, rng):
    ds = write_fake_dataset(str(tmp_path / "d"), n_shards=1, samples_per_shard=3, fields=fields)
    rows = {r["key"]: dict(r["checksums"]) for r in read_index(ds.layout).to_pylist()}
    for group in ("latent", "semantic"):
        for sample in wds.WebDataset(ds.layout.tar_path(group, 0), shardshuffle=False):
            members = {k: v for k, v in sample.items() if not k.startswith("__")}
            assert members  # every member of every group has its digest
            for member, data in members.items():
                assert rows[sample["__key__"]][member] == f"{zlib.crc32(data):08x}"
    assert set(rows["s0-0"]) == {"latent.npy", "logvar.npy", "semantic_low.npy", "json", "semantic.npy"}


def test_stats_fragment_per_shard_and_the_card_is_their_merge(tmp_path):
    ds = write_fake_dataset(str(tmp_path / "d"), n_shards=3, samples_per_shard=2)
    parts = [read_stats_fragment(ds.layout, n) for n in range(3)]
    index = read_index(ds.layout).to_pylist()
    for n, part in enumerate(parts):
        assert part.count == sum(r["frame_count"] for r in index if r["shard"] == f"shard-{n:06d}")
    merged = ChannelStats.merge_all(parts)
    assert merged.count == ds.card.latent_stats.count
    np.testing.assert_allclose(merged.mean, ds.card.latent_stats.mean, rtol=1e-12)


def test_an_empty_shard_gets_count_zero_stats(tmp_path, fields):
    ds = write_fake_dataset(str(tmp_path / "d"), n_shards=1, samples_per_shard=2, failures=0)
    write_shard(ds.layout, 1, [], fields)
    assert read_stats_fragment(ds.layout, 1).count == 0
    write_shard_summary(ds.layout, summarise_shards(ds.layout, [0, 1]))  # as a finaliser would
    write_card(ds.layout, replace(ds.card, totals=open_dataset(ds.url).measured_totals()))
    report = verify_dataset(ds.url)
    assert report.ok and report.findings == []


def test_changed_finite_values_in_an_npy_member_are_a_fault(dataset):
    rewrite_tar(dataset.layout, "latent", 0, _nudge_latent)
    report = verify_dataset(dataset.url)
    found = faults(report)
    assert any(w == "latent/shard-000000.tar" and "member s0-1.latent.npy: crc32" in m for w, m in found)
    # the shard's stats no longer describe its latents either
    assert any(w == "stats/shard-000000.json" and "recomputed" in m for w, m in found)
    assert all("shard-000001" not in w for w, _ in found)
    # the quick mode reads no member: it cannot see this (same size, same structure)
    assert verify_dataset(dataset.url, quick=True).ok


def test_a_changed_json_member_is_a_fault(dataset):
    def retext(members):
        if members["__key__"] == "s1-2":
            meta = json.loads(members["json"])
            members["json"] = json.dumps({**meta, "speaker": "someone else"}).encode()
        return members

    rewrite_tar(dataset.layout, "latent", 1, retext)
    assert [w for w, m in faults(verify_dataset(dataset.url)) if "s1-2.json" in m] == [
        "latent/shard-000001.tar"
    ]


def test_a_changed_semantic_member_is_a_fault(dataset):
    def scale(members):
        if members["__key__"] == "s0-0":
            members["semantic.npy"] = encode_npy(decode_npy(members["semantic.npy"]) * np.float16(2))
        return members

    rewrite_tar(dataset.layout, "semantic", 0, scale)
    found = faults(verify_dataset(dataset.url))
    assert [w for w, m in found] == ["semantic/shard-000000.tar"] and "s0-0.semantic.npy" in found[0][1]


@pytest.mark.parametrize("quick", [False, True])
def test_edited_latent_stats_in_the_card_are_a_fault(dataset, quick):
    data = json.loads(dataset.layout.fs.cat_file(dataset.layout.card_path))
    data["latent_stats"]["mean"][3] += 0.01
    dataset.layout.fs.pipe_file(dataset.layout.card_path, json.dumps(data).encode())
    found = faults(verify_dataset(dataset.url, quick=quick))
    assert len(found) == 1
    where, message = found[0]
    assert (
        where == "card.json latent_stats" and "not the merge of stats/" in message and "channel 3" in message
    )


@pytest.mark.parametrize("quick", [False, True])
def test_a_deleted_stats_fragment_is_a_fault(dataset, quick):
    dataset.layout.fs.rm(dataset.layout.stats_path(1))
    found = faults(verify_dataset(dataset.url, quick=quick))
    assert [w for w, _ in found] == ["stats/shard-000001.json"]
    assert "missing" in found[0][1] and "no stats fragment" in found[0][1]


def test_stats_over_the_wrong_frames_or_values_are_a_fault(dataset):
    layout = dataset.layout
    part = read_stats_fragment(layout, 0).to_dict()
    layout.fs.pipe_file(layout.stats_path(0), json.dumps({**part, "count": part["count"] - 1}).encode())
    assert any(
        w == "stats/shard-000000.json" and "frames" in m for w, m in faults(verify_dataset(dataset.url))
    )
    # same count, other values, and a card rewritten to match: only the recomputation sees it
    part["std"] = [s * 1.5 for s in part["std"]]
    layout.fs.pipe_file(layout.stats_path(0), json.dumps(part).encode())
    merged = ChannelStats.merge_all([read_stats_fragment(layout, n) for n in (0, 1)])
    write_card(layout, replace(read_card(layout), latent_stats=merged))
    found = faults(verify_dataset(dataset.url))
    assert found == [
        ("stats/shard-000000.json", "disagree with the stats of shard-000000's stored latents, recomputed")
    ]
    assert verify_dataset(dataset.url, quick=True).ok


def test_orphan_stats_fragment_is_a_warning(dataset):
    fs = dataset.layout.fs
    fs.pipe_file(dataset.layout.stats_path(7), fs.cat_file(dataset.layout.stats_path(0)))
    report = verify_dataset(dataset.url)
    assert report.ok and [f.where for f in report.warnings] == ["stats/shard-000007.json"]


def test_sha256_fragments_verify_too(tmp_path, fields, rng):
    ds = write_fake_dataset(str(tmp_path / "d"), n_shards=1, samples_per_shard=2, failures=0)
    samples = [fake_sample(f"c-{i}", 12, fields, rng) for i in range(2)]
    write_shard(ds.layout, 1, samples, fields, checksum="sha256")
    # the card's totals are rewritten to include the new shard
    card = read_card(ds.layout)
    reader = open_dataset(ds.url)
    merged = ChannelStats.merge_all([read_stats_fragment(ds.layout, n) for n in (0, 1)])
    write_card(ds.layout, replace(card, totals=reader.measured_totals(), latent_stats=merged))
    row = read_index(ds.layout, [1]).to_pylist()[0]
    first = next(iter(wds.WebDataset(ds.layout.tar_path("latent", 1), shardshuffle=False)))
    assert dict(row["checksums"])["latent.npy"] == hashlib.sha256(first["latent.npy"]).hexdigest()
    assert verify_dataset(ds.url).ok

    def nudge(members):
        latent = decode_npy(members["latent.npy"]).copy()
        latent[0, 0] += np.float16(1)
        members["latent.npy"] = encode_npy(latent)
        return members

    rewrite_tar(ds.layout, "latent", 1, nudge)
    found = faults(verify_dataset(ds.url))
    assert any(w == "latent/shard-000001.tar" and "c-0.latent.npy: sha256" in m for w, m in found)


def _downgrade_to_1_0(ds):
    """Make `ds` look written by schema 1.0 software: no checksums column, no stats/."""
    layout = ds.layout
    for path in layout.committed_shards().values():
        table = pq.read_table(path).drop_columns(["checksums"])
        table = table.replace_schema_metadata({VERSION_KEY: b"1.0", KIND_KEY: b"index"})
        pq.write_table(table, path)
    layout.fs.rm(layout.path("stats"), recursive=True)
    data = json.loads(layout.fs.cat_file(layout.card_path))
    data["schema_version"] = "1.0"
    layout.fs.pipe_file(layout.card_path, json.dumps(data).encode())


def test_a_schema_1_0_dataset_reads_and_verifies_with_notes(dataset, capsys):
    _downgrade_to_1_0(dataset)
    reader = open_dataset(dataset.url)
    assert reader.index().column("checksums").null_count == 6
    assert len(list(reader.iter_samples())) == 6
    report = verify_dataset(dataset.url)
    assert report.ok and not report.warnings and report.members == 0 and report.samples == 6
    assert sorted(f.where for f in report.findings if f.level == NOTE) == ["index", "stats"]
    assert main(["verify", dataset.url, "--strict"]) == 0  # notes are not warnings
    out = capsys.readouterr().out
    assert "NOTE index: 2 fragment(s) (shard-000000, shard-000001) carry no checksums" in out
    # a 1.0 dataset still has its other checks
    rewrite_tar(dataset.layout, "latent", 0, lambda m: None if m["__key__"] == "s0-0" else m)
    assert ("shard-000000/s0-0", "index row without a sample in the tar") in faults(
        verify_dataset(dataset.url)
    )


def test_a_1_0_card_whose_stats_count_disagrees_is_a_fault(dataset):
    _downgrade_to_1_0(dataset)
    data = json.loads(dataset.layout.fs.cat_file(dataset.layout.card_path))
    data["latent_stats"]["count"] -= 10
    dataset.layout.fs.pipe_file(dataset.layout.card_path, json.dumps(data).encode())
    assert [w for w, _ in faults(verify_dataset(dataset.url))] == ["card.json latent_stats"]


def test_a_fragment_naming_checksums_with_rows_without_them_is_a_fault(dataset):
    rows = [
        IndexRow(**{**r, "fields": tuple(r["fields"])}) for r in read_index(dataset.layout, [0]).to_pylist()
    ]
    rows = [r if r.key != "s0-2" else IndexRow(**{**r.__dict__, "checksums": None}) for r in rows]
    write_index_fragment(dataset.layout, 0, rows)
    found = faults(verify_dataset(dataset.url))
    assert found == [("shard-000000/s0-2", "index row has no checksums, though its fragment names crc32")]


def test_quick_mode_reads_no_member(dataset, capsys):
    report = verify_dataset(dataset.url, quick=True)
    assert report.ok and report.quick and (report.samples, report.members) == (0, 0) and report.shards == 2
    assert main(["verify", dataset.url, "--quick"]) == 0
    assert "structure only" in capsys.readouterr().out


# --- every tamper case: `losatok-data verify` exits 1 and names the file ------------------------


def _truncate(layout):
    path = layout.tar_path("latent", 1)
    data = layout.fs.cat_file(path)
    layout.fs.pipe_file(path, data[: len(data) // 2])


def _edit_card(change):
    def edit(layout):
        data = json.loads(layout.fs.cat_file(layout.card_path))
        change(data)
        layout.fs.pipe_file(layout.card_path, json.dumps(data).encode())

    return edit


def _drop_index_row(layout):
    rows = [IndexRow(**{**r, "fields": tuple(r["fields"])}) for r in read_index(layout, [0]).to_pylist()]
    write_index_fragment(layout, 0, [r for r in rows if r.key != "s0-0"])


def _shorten_logvar(members):
    if members["__key__"] == "s0-2":
        members["logvar.npy"] = encode_npy(decode_npy(members["logvar.npy"])[:-1])
    return members


TAMPERING = {
    "npy values changed": (
        lambda layout: rewrite_tar(layout, "latent", 0, _nudge_latent),
        "latent/shard-000000.tar",
    ),
    "card latent_stats edited": (
        _edit_card(lambda d: d["latent_stats"]["std"].__setitem__(0, d["latent_stats"]["std"][0] * 1.01)),
        "card.json latent_stats",
    ),
    "stats fragment deleted": (lambda layout: layout.fs.rm(layout.stats_path(0)), "stats/shard-000000.json"),
    "tar truncated": (_truncate, "latent/shard-000001.tar"),
    "tar deleted": (lambda layout: layout.fs.rm(layout.tar_path("semantic", 1)), "semantic/shard-000001.tar"),
    "index fragment garbled": (
        lambda layout: layout.fs.pipe_file(layout.index_path(1), b"not parquet"),
        "index/shard-000001.parquet",
    ),
    "index row dropped": (_drop_index_row, "shard-000000/s0-0"),
    "sample dropped from its tar": (
        lambda layout: [
            rewrite_tar(layout, g, 1, lambda m: None if m["__key__"] == "s1-1" else m)
            for g in ("latent", "semantic")
        ],
        "shard-000001/s1-1",
    ),
    "frame count mismatch": (
        lambda layout: rewrite_tar(layout, "latent", 0, _shorten_logvar),
        "shard-000000/s0-2",
    ),
    "card totals edited": (
        _edit_card(lambda d: d["totals"].__setitem__("samples", 99)),
        "card.json totals.samples",
    ),
    "card of a newer major": (_edit_card(lambda d: d.__setitem__("schema_version", "2.0")), "card.json"),
    "ledger row added": (
        lambda layout: write_failures(layout, "writer-9", [FailureRecord("/x.wav", "decode", "E", "bad")]),
        "card.json failures",
    ),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_verify_exits_one_naming_the_file(dataset, capsys, case):
    tamper, where = TAMPERING[case]
    assert main(["verify", dataset.url]) == 0
    capsys.readouterr()
    tamper(dataset.layout)
    assert main(["verify", dataset.url]) == 1
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith(f"FAULT {where}") for line in out), out
    assert out[-1].startswith("FAILED")
