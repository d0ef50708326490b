"""Bad usage of `losatok-tokenize`: one line naming the culprit, exit status 2, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipelines import tokenize as cli


def run_cli(monkeypatch, capsys, *overrides: str) -> tuple[int, str]:
    """Run the real entry point in this process; (exit status, stderr)."""
    monkeypatch.setattr(sys, "argv", ["losatok-tokenize", *overrides])
    monkeypatch.setattr(cli, "_started", False)
    with pytest.raises(SystemExit) as done:
        cli.main()
    return done.value.code, capsys.readouterr().err


def assert_one_line(err: str, *names: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for name in names:
        assert name in lines[0], (name, lines[0])


@pytest.fixture
def source(audio_dir):
    return str(audio_dir)


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder on a read-only file system (a tmpfs mounted ro as root; else a mode-0555 folder)."""
    path = tmp_path / "ro"
    path.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], check=True)
        yield path
        subprocess.run(["umount", str(path)], check=True)
    else:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)


def test_read_only_sink(monkeypatch, capsys, source, read_only_dir):
    sink = read_only_dir / "ds"
    code, err = run_cli(monkeypatch, capsys, f"source.path={source}", f"sink.path={sink}")
    assert code == 2
    assert_one_line(err, "sink.path", str(sink), "read-only")
    assert not sink.exists()


def test_sink_under_a_regular_file(monkeypatch, capsys, source, tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    sink = tmp_path / "notes.txt" / "ds"
    code, err = run_cli(monkeypatch, capsys, f"source.path={source}", f"sink.path={sink}")
    assert code == 2
    assert_one_line(err, "sink.path", "notes.txt", "is a file")


def test_missing_checkpoint(monkeypatch, capsys, source, tmp_path):
    sink = tmp_path / "ds"
    overrides = [
        "model=official",
        "model.checkpoint=/nope/ckpt.pth",
        f"source.path={source}",
        f"sink.path={sink}",
    ]
    code, err = run_cli(monkeypatch, capsys, *overrides)
    assert code == 2
    assert_one_line(err, "model.checkpoint=/nope/ckpt.pth")
    assert not sink.exists()


@pytest.mark.parametrize(
    "override,named",
    [
        ("segment.max_seconds=abc", "segment.max_seconds must be a number, got 'abc'"),
        ("sink.inputs_per_shard=0", "sink.inputs_per_shard must be positive"),
        ("cluster.retries=-1", "cluster.retries must be positive"),
        ("cluster.max_frames_per_batch=0", "cluster.max_frames_per_batch must be positive"),
        ("cluster.max_failure_fraction=2", "cluster.max_failure_fraction"),
    ],
)
def test_bad_values_are_named(monkeypatch, capsys, source, tmp_path, override, named):
    sink = tmp_path / "ds"
    code, err = run_cli(monkeypatch, capsys, f"source.path={source}", f"sink.path={sink}", override)
    assert code == 2
    assert_one_line(err, named)
    assert not sink.exists()


def test_missing_source_leaves_no_sink_behind(monkeypatch, capsys, tmp_path):
    sink = tmp_path / "ds"
    code, err = run_cli(monkeypatch, capsys, f"source.path={tmp_path / 'absent'}", f"sink.path={sink}")
    assert code == 2
    assert_one_line(err, "source.path", "absent", "does not exist")
    assert not sink.exists()


def test_a_bad_override_is_exit_two_not_a_traceback(monkeypatch, capsys, source, tmp_path):
    code, err = run_cli(monkeypatch, capsys, f"source.path={source}", "model=no_such_model")
    assert code == 2
    assert "no_such_model" in err and "Traceback" not in err
