"""Tests of losatok_data.cli, the `losatok-data` command (named apart from tests/losatok/test_cli.py: no __init__ files)."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from losatok_data.card import write_card
from losatok_data.cli import main, storage_options
from losatok_data.testing import audio_measures, write_fake_dataset

# audio measures of the `measured` dataset: s0-3 has none (as a row written before schema 1.3);
# h-a is heard three times, h-0 and h-b twice each
MEASURES = {
    "s0-0": audio_measures("h-a", rms_db=-30.0, clipped_fraction=0.01),
    "s0-1": audio_measures("h-b", rms_db=-120.0, peak=0.0, silent_fraction=1.0, loudness_lufs=None),
    "s0-2": audio_measures("h-0", rms_db=-45.0),
    "s1-0": audio_measures("h-a", silent_fraction=0.95),
    "s1-1": audio_measures("h-b", rms_db=-25.0),
    "s1-2": audio_measures("h-a", rms_db=-22.0),
    "s1-3": audio_measures("h-0", rms_db=-10.0, peak=1.0, clipped_fraction=0.002, loudness_lufs=-9.0),
}


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """Two shards of four samples with the audio measures above (read only: shared by the tests)."""
    url = str(tmp_path_factory.mktemp("measured") / "ds")
    return write_fake_dataset(url, n_shards=2, samples_per_shard=4, metadata=MEASURES)


def ls_keys(*args, capsys) -> list[str]:
    assert main(["ls", *args, "--json"]) == 0
    return [json.loads(line)["key"] for line in capsys.readouterr().out.splitlines()]


def test_verify_good_dataset_exits_zero(dataset, capsys):
    assert main(["verify", dataset.url]) == 0
    out = capsys.readouterr().out.splitlines()
    # 6 samples of 5 members each: latent, logvar, semantic_low, json; semantic
    assert out == ["OK: 2 shards, 6 samples, 30 member checksums checked; 0 faults, 0 warnings"]


def test_verify_prints_each_fault_and_exits_one(dataset, capsys):
    card = dataset.card
    write_card(dataset.layout, replace(card, totals=replace(card.totals, shards=5, frames=1)))
    dataset.layout.fs.rm(dataset.layout.tar_path("latent", 0))
    assert main(["verify", dataset.url]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("FAILED: 2 shards") and "faults" in lines[-1]
    faults = [line for line in lines if line.startswith("FAULT ")]
    assert any(line.startswith("FAULT latent/shard-000000.tar: missing") for line in faults)
    assert "FAULT card.json totals.shards: card says 5; the dataset has 2" in faults
    assert any(line.startswith("FAULT card.json totals.frames") for line in faults)


def test_verify_strict_fails_on_warnings(dataset, capsys):
    fs = dataset.layout.fs
    fs.pipe_file(dataset.layout.tar_path("latent", 4), fs.cat_file(dataset.layout.tar_path("latent", 0)))
    assert main(["verify", dataset.url]) == 0
    assert main(["verify", dataset.url, "--strict"]) == 1
    assert "WARNING latent/shard-000004.tar: no index fragment" in capsys.readouterr().out


def test_stats(dataset, capsys):
    assert main(["stats", dataset.url, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["samples"] == 6 and out["shards"] == 2 and out["frames"] == dataset.card.totals.frames
    assert sum(out["duration_histogram"].values()) == 6
    frames = dataset.card.totals.frames
    assert out["field_payload_bytes"]["semantic"]["bytes"] == frames * 64 * 2
    assert out["field_payload_bytes"]["latent"]["bytes"] == frames * 16 * 2
    assert main(["stats", dataset.url]) == 0
    text = capsys.readouterr().out
    assert "6 in 2 shards" in text and "semantic" in text
    failed = next(line for line in text.splitlines() if line.startswith("failed"))
    counts = ", ".join(f"{stage} {n}" for stage, n in dataset.card.failures.items() if n)
    assert failed == f"failed    {dataset.card.failed_inputs} inputs ({counts})" and "{" not in failed
    # data written before schema 1.3 has no audio measures: said, not a crash
    assert "measures  none: no audio measures (written before schema 1.3)" in text.splitlines()
    assert main(["stats", dataset.url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["measures"] is None


def test_stats_shows_measure_distributions_clipped_silent_and_duplicates(measured, capsys):
    assert main(["stats", measured.url, "--json"]) == 0
    m = json.loads(capsys.readouterr().out)["measures"]
    assert m["samples_measured"] == 7 and m["hashed_samples"] == 7
    rms = m["distributions"]["rms_db"]
    assert rms["count"] == 7 and rms["min"] == -120.0 and rms["max"] == -10.0
    assert rms["median"] == -25.0 and -120.0 < rms["p5"] < rms["median"] < rms["p95"] < -10.0
    assert m["distributions"]["loudness_lufs"]["count"] == 6  # undefined for digital silence
    assert m["distributions"]["peak"]["max"] == 1.0
    assert m["clipped_samples"] == 2 and m["mostly_silent_samples"] == 2  # s0-1 (1.0), s1-0 (0.95)
    assert m["duplicate_groups"] == 3 and m["duplicate_samples"] == 4
    extra = ("s1-0", "s1-2", "s1-1", "s1-3")  # all but the first of each group
    assert m["duplicate_seconds"] == pytest.approx(sum(measured.samples[k].metadata.duration for k in extra))
    assert main(["stats", measured.url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "measures  7 of 8 samples measured" in lines
    row = next(line.split() for line in lines if line.strip().startswith("rms_db"))
    assert row[:3] == ["rms_db", "7", "-120"] and row[-1] == "-10"
    assert any("clipped 2 samples" in line and "mostly silent 2" in line for line in lines)
    assert any("duplicates 3 groups" in line and "4 samples beyond the first" in line for line in lines)


def test_show(dataset, capsys):
    assert main(["show", dataset.url, "s0-1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    sample = dataset.samples["s0-1"]
    assert out["shard"] == "shard-000000" and out["metadata"]["frame_count"] == sample.frame_count
    assert out["arrays"]["semantic"]["shape"] == [sample.frame_count, 64]
    assert out["arrays"]["latent"]["dtype"] == "float16"
    assert main(["show", dataset.url, "absent"]) == 2
    assert "no sample key is or starts with 'absent'" in capsys.readouterr().err


def test_show_takes_a_unique_key_prefix(dataset, capsys):
    assert main(["show", dataset.url, "s1-", "--json"]) == 2  # s1-0, s1-1, s1-2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: 3 keys start with 's1-'") and "\n" not in err
    assert main(["show", dataset.url, "s1-2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["key"] == "s1-2"


def test_ls_lists_keys_durations_and_sources_filtered_by_source(dataset, capsys):
    assert main(["ls", dataset.url, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(r["key"] for r in rows) == sorted(dataset.samples)
    sample = dataset.samples[rows[0]["key"]]
    assert rows[0]["duration"] == pytest.approx(sample.metadata.duration)
    assert rows[0]["source"] == sample.metadata.source
    wanted = rows[-1]["source"]
    assert main(["ls", dataset.url, "--source", wanted]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(wanted in line for line in lines)
    assert len(lines) == sum(r["source"] == wanted or wanted in r["source"] for r in rows)
    assert main(["ls", dataset.url, "--limit", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_ls_filters_with_where_and_sorts_by_any_column(measured, capsys):
    url = measured.url
    # nulls match no comparison: s0-3 (no measures) is in neither half
    assert ls_keys(url, "--where", "rms_db<-25", capsys=capsys) == ["s0-0", "s0-1", "s0-2"]
    assert ls_keys(url, "--where", "rms_db >= -25", capsys=capsys) == ["s1-0", "s1-1", "s1-2", "s1-3"]
    assert ls_keys(url, "--where", "silent_fraction>0.5", "--where", "rms_db<-40", capsys=capsys) == ["s0-1"]
    assert ls_keys(url, "--where", "content_hash!=h-a", capsys=capsys) == ["s0-1", "s0-2", "s1-1", "s1-3"]
    assert ls_keys(url, "--where", "content_hash=='h-0'", capsys=capsys) == ["s0-2", "s1-3"]
    assert ls_keys(url, "--where", "key!=s0-0", "--where", "shard==shard-000000", capsys=capsys) == [
        "s0-1",
        "s0-2",
        "s0-3",
    ]
    # sorted, nulls last either way, ties in index order; then the limit
    ascending = ["s0-1", "s0-2", "s0-0", "s1-1", "s1-2", "s1-0", "s1-3", "s0-3"]
    assert ls_keys(url, "--sort", "rms_db", capsys=capsys) == ascending
    assert ls_keys(url, "--sort", "rms_db", "--desc", "--limit", "3", capsys=capsys) == [
        "s1-3",
        "s1-0",
        "s1-2",
    ]
    durations = sorted(measured.samples, key=lambda k: measured.samples[k].metadata.duration)
    assert ls_keys(url, "--sort", "duration", capsys=capsys) == durations
    # the measures: in each JSON row (null when absent), and in the text line when present
    assert main(["ls", url, "--where", "frame_count>0", "--json"]) == 0
    rows = {r["key"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["s1-3"]["peak"] == 1.0 and rows["s1-3"]["content_hash"] == "h-0"
    assert rows["s0-3"]["rms_db"] is None and rows["s0-3"]["content_hash"] is None
    assert main(["ls", url]) == 0
    lines = {line.split("\t")[0]: line.split("\t") for line in capsys.readouterr().out.splitlines()}
    assert lines["s1-3"][4] == "-10.0 dBFS peak 1.000 clip 0.20% silent 10% -9.0 LUFS #h-0"
    assert lines["s0-1"][4] == "-120.0 dBFS peak 0.000 clip 0.00% silent 100% #h-b"  # no loudness
    assert len(lines["s0-3"]) == 4  # no measures: the line as before schema 1.3


def test_ls_refuses_an_unknown_column_or_a_bad_expression_in_one_line(measured, capsys):
    cases = [
        (["--where", "rms<-40"], "error: --where 'rms<-40': no column 'rms' in the index"),
        (["--where", "rms_db=-40"], "error: --where 'rms_db=-40': expected COLUMN<OP>VALUE"),
        (["--where", "rms_db<"], "error: --where 'rms_db<': expected COLUMN<OP>VALUE"),
        (["--where", "rms_db<loud"], "error: --where 'rms_db<loud': 'loud' is not a number"),
        (["--where", "fields==latent"], "error: --where 'fields==latent': column 'fields' holds list"),
        (["--sort", "volume"], "error: --sort volume: no column 'volume' in the index"),
        (["--sort", "checksums"], "error: --sort checksums: column 'checksums' holds map"),
    ]
    for args, message in cases:
        assert main(["ls", measured.url, *args]) == 2, args
        captured = capsys.readouterr()
        assert captured.err.startswith(message) and captured.err.count("\n") == 1 and not captured.out, args


def test_duplicates_lists_groups_largest_first_then_a_summary(measured, capsys, monkeypatch):
    import losatok_data.cli as cli
    from losatok_data.reader import DatasetReader

    read = []
    real = cli.read_fragments
    monkeypatch.setattr(cli, "read_fragments", lambda *a, **k: read.append(list(a[2])) or real(*a, **k))
    monkeypatch.setattr(DatasetReader, "index", lambda self: pytest.fail("read the whole index"))
    assert main(["duplicates", measured.url]) == 0
    assert read == [["key", "content_hash", "duration", "source"]]  # those columns only
    *groups, summary = capsys.readouterr().out.splitlines()
    source = "/corpus/{}.flac".format
    assert groups == [
        f"h-a\t3\ts0-0,s1-0,s1-2\t{source('s0-0')},{source('s1-0')},{source('s1-2')}",
        f"h-0\t2\ts0-2,s1-3\t{source('s0-2')},{source('s1-3')}",  # ties: by hash
        f"h-b\t2\ts0-1,s1-1\t{source('s0-1')},{source('s1-1')}",
    ]
    seconds = sum(measured.samples[k].metadata.duration for k in ("s1-0", "s1-2", "s1-3", "s1-1"))
    assert summary == (
        f"3 duplicate groups: 4 samples beyond the first of each, {seconds:.2f} s; "
        "1 samples carry no content hash"
    )
    assert main(["duplicates", measured.url, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["duplicate_groups"], out["duplicate_samples"], out["unhashed_samples"]) == (3, 4, 1)
    first = out["groups"][0]
    assert first["keys"] == ["s0-0", "s1-0", "s1-2"] and first["count"] == 3
    assert first["seconds"] == pytest.approx(measured.samples["s0-0"].metadata.duration)
    assert main(["duplicates", measured.url, "--extra-keys"]) == 0  # an exclude_keys_file
    assert capsys.readouterr().out.split() == ["s1-0", "s1-2", "s1-3", "s1-1"]


def test_duplicates_without_content_hashes_exits_zero_and_counts_them(dataset, capsys):
    assert main(["duplicates", dataset.url]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "0 duplicate groups: 0 samples beyond the first of each, 0.00 s; "
        "6 samples carry no content hash (written before schema 1.3)"
    ]


def test_a_missing_dataset_is_one_line_and_exit_two(tmp_path, capsys):
    for command in ("verify", "stats", "ls", "duplicates"):
        assert main([command, str(tmp_path / "nope")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "nope" in err and "Traceback" not in err


def test_show_refuses_a_newer_major(dataset, capsys):
    data = json.loads(dataset.card.to_json())
    data["schema_version"] = "3.0"
    dataset.layout.fs.pipe_file(dataset.layout.card_path, json.dumps(data).encode())
    assert main(["stats", dataset.url]) == 2
    assert "schema version 3.0; this software reads 1.x" in capsys.readouterr().err


def test_storage_options_from_env_and_flags(monkeypatch):
    monkeypatch.setenv("LOSATOK_STORAGE_OPTIONS", '{"anon": true, "endpoint_url": "http://a"}')
    options = storage_options(["endpoint_url=http://b", 'client_kwargs={"region_name": "x"}'])
    assert options == {"anon": True, "endpoint_url": "http://b", "client_kwargs": {"region_name": "x"}}
    with pytest.raises(ValueError):
        storage_options(["no-equals-sign"])


def test_python_dash_m_entry_point(dataset):
    result = subprocess.run(
        [sys.executable, "-m", "losatok_data.cli", "verify", dataset.url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and result.stdout.startswith("OK:")


def test_verify_on_s3_prefix(s3_endpoint, s3_bucket, capsys):
    url = f"s3://{s3_bucket}/corpus-v1"
    options = {"endpoint_url": s3_endpoint}
    ds = write_fake_dataset(url, n_shards=2, samples_per_shard=2, storage_options=options)
    flag = ["--storage-option", f"endpoint_url={s3_endpoint}"]
    assert main(["verify", url, *flag]) == 0
    assert capsys.readouterr().out.startswith("OK: 2 shards, 4 samples")
    assert main(["show", url, "s1-0", "--json", *flag]) == 0
    assert json.loads(capsys.readouterr().out)["shard"] == "shard-000001"

    # Truncate one object in the bucket: verify names it.
    path = ds.layout.tar_path("latent", 1)
    data = ds.layout.fs.cat_file(path)
    ds.layout.fs.pipe_file(path, data[:1000])
    assert main(["verify", url, *flag]) == 1
    assert "FAULT latent/shard-000001.tar" in capsys.readouterr().out
