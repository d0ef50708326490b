import subprocess
import sys

import pytest
import torch

from losatok import LoSATok, save_checkpoint, tiny
from losatok_input.decoder import load_audio


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.reconstruct", *args], capture_output=True, text=True)


def test_reconstruct_without_checkpoint_warns_untrained_and_prints_shapes(audio_dir, tmp_path):
    done = _run(str(audio_dir / "speech.mp3"), str(tmp_path / "out.wav"), "--preset", "tiny")
    assert done.returncode == 0, done.stderr
    assert "UNTRAINED" in done.stderr
    frames = load_audio(audio_dir / "speech.mp3").numel() // 640
    assert f"z             ({frames}, 16)" in done.stdout
    assert f"semantic_high ({frames}, 64)" in done.stdout
    assert load_audio(tmp_path / "out.wav").numel() == frames * 640


def test_reconstruct_with_our_checkpoint_is_quiet(audio_dir, tmp_path):
    torch.manual_seed(0)
    save_checkpoint(LoSATok(tiny()), tmp_path / "tiny.pt")
    done = _run(
        str(audio_dir / "music.ogg"), str(tmp_path / "out.flac"), "--checkpoint", str(tmp_path / "tiny.pt")
    )
    assert done.returncode == 0, done.stderr
    assert "UNTRAINED" not in done.stderr
    assert (tmp_path / "out.flac").stat().st_size > 0


def test_reconstruct_names_a_bad_input(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"nope" * 100)
    done = _run(str(tmp_path / "bad.wav"), str(tmp_path / "out.wav"), "--preset", "tiny")
    assert done.returncode == 2 and "bad.wav: cannot decode as audio" in done.stderr


@pytest.mark.slow  # a subprocess per case
@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (["/nonexistent/in.wav", "{tmp}/out.wav"], "/nonexistent/in.wav does not exist"),
        (["{speech}", "{tmp}/no/such/folder/out.wav"], "is not a writable folder"),
        (["{speech}", "{tmp}/out.wav", "--checkpoint", "/nope/ckpt.pth"], "/nope/ckpt.pth does not exist"),
        (["{speech}", "{tmp}/out.wav", "--device", "toaster"], "'toaster' is not a device"),
        (["{speech}", "{tmp}/out.wav", "--preset", "huge"], "argument --preset: invalid choice"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(audio_dir, tmp_path, args, culprit):
    names = {"tmp": tmp_path, "speech": audio_dir / "speech.mp3"}
    done = _run(*(a.format(**names) for a in args))
    assert done.returncode == 2, done.stderr
    assert culprit in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "out.wav").exists()
