import json
import subprocess
import sys

import pytest
import torch

from losatok import LoSATok, save_checkpoint, tiny


def test_eval_prints_a_table_and_writes_json(audio_dir, tmp_path):
    torch.manual_seed(0)
    save_checkpoint(LoSATok(tiny()), tmp_path / "tok.pt")
    (tmp_path / "data").mkdir()
    for name in ("speech.mp3", "music.flac"):
        (tmp_path / "data" / name).write_bytes((audio_dir / name).read_bytes())
    (tmp_path / "data" / "broken.wav").write_bytes(b"nope" * 50)
    done = subprocess.run(
        [sys.executable, "-m", "jobs.eval_tokenizer", str(tmp_path / "data"), "--checkpoint", str(tmp_path / "tok.pt"), "--out", str(tmp_path / "eval.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "mean of 2 files" in done.stdout and "broken.wav" in done.stderr
    report = json.loads((tmp_path / "eval.json").read_text())
    assert set(report["mean"]) == {"mel_distance", "stft_distance", "si_sdr", "semantic_preservation"}
    assert len(report["files"]) == 2 and all(v == v for v in report["mean"].values())  # finite, not NaN


def test_eval_of_the_published_model_from_the_hub_cache(audio_dir, tmp_path, monkeypatch, capsys):
    """No --checkpoint with the official preset: the published file, offline from a filled cache."""
    import dataclasses

    from jobs.eval_tokenizer import main
    from losatok.config import PRESETS
    from losatok.testing import fill_hub_cache

    tiny_official = dataclasses.replace(tiny(), preset="official")  # official code path, test-sized
    monkeypatch.setitem(PRESETS, "official", lambda: tiny_official)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "speech.mp3").write_bytes((audio_dir / "speech.mp3").read_bytes())

    with pytest.raises(SystemExit) as exited:
        main([str(tmp_path / "data")])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "losatok_kl1e-3.pth" in err and "wxzyd123/LoSATok" in err

    torch.manual_seed(0)
    fill_hub_cache(tmp_path / "hub", {"losatok_kl1e-3.pth": LoSATok(tiny_official).state_dict()}, "c" * 40)
    assert main([str(tmp_path / "data"), "--out", str(tmp_path / "eval.json")]) == 0
    assert len(json.loads((tmp_path / "eval.json").read_text())["files"]) == 1


def test_eval_lists_audio_by_the_pipeline_rule(audio_dir, tmp_path):
    from jobs.eval_tokenizer import audio_files

    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.oga").write_bytes((audio_dir / "music.ogg").read_bytes())  # ignored before
    (tmp_path / "c.wav").write_bytes((audio_dir / "speech.wav").read_bytes())
    files, unlisted = audio_files(tmp_path)
    assert [f.name for f in files] == ["b.oga", "c.wav"]
    assert unlisted.to_dict()["by_reason"] == {
        "not audio (.txt)": {"count": 1, "examples": [str(tmp_path / "a.txt")]}
    }


def test_eval_without_audio_exits_2_naming_what_was_skipped(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    done = subprocess.run(
        [sys.executable, "-m", "jobs.eval_tokenizer", str(tmp_path), "--preset", "tiny"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert f"error: no audio files under {tmp_path}" in done.stderr and "1 not audio (.txt)" in done.stderr
