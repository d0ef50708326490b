"""Tests of losatok_data.cli, the `losatok-data` command (named apart from tests/losatok/test_cli.py: no __init__ files)."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from losatok_data.card import write_card
from losatok_data.cli import main, storage_options
from losatok_data.testing import write_fake_dataset


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


def test_a_missing_dataset_is_one_line_and_exit_two(tmp_path, capsys):
    for command in ("verify", "stats", "ls"):
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
