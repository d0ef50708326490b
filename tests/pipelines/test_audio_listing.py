"""What the pipeline does with what its listing left out: every skipped file counted by reason
in the run summary and runs/*.json, and a source without audio refused (exit 2) before the sink
is touched. The listing itself: tests/losatok_input/test_listing.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from losatok_input.testing import FORMAT_CORPUS_AUDIO as AUDIO
from losatok_input.testing import FORMAT_CORPUS_SKIPPED as SKIPPED
from pipelines.run import tokenize
from pipelines.testing import tiny_run


@pytest.mark.slow  # a fresh interpreter imports torch and hydra
def test_the_cli_exits_2_with_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "readme.txt").write_text("x")
    sink = tmp_path / "sink"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.tokenize",
            f"source.path={tmp_path / 'corpus'}",
            f"sink.path={sink}",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no audio source: found no audio file under")
    assert str(tmp_path / "corpus") in lines[0] and "1 not audio (.txt)" in lines[0]
    assert not sink.exists()


@pytest.mark.slow  # a real run on Ray
def test_skipped_files_reach_the_summary_and_the_run_log(ray_address, format_corpus, tmp_path):
    summary = tokenize(tiny_run(format_corpus, tmp_path / "ds"))
    assert summary.ok and summary.inputs == len(AUDIO)
    assert {r: v["count"] for r, v in summary.skipped["by_reason"].items()} == SKIPPED
    assert "skipped 6 files" in summary.describe() and "2 hidden file" in summary.describe()
    [log] = (tmp_path / "ds" / "runs").glob("run-*.json")
    record = json.loads(log.read_text())
    assert record["skipped"]["total"] == 6
    assert record["skipped"]["by_reason"]["no audio stream (.mkv, probed)"]["examples"] == [
        str(format_corpus / "video.mkv")
    ]
