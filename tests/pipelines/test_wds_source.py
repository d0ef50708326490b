"""WebDataset audio shards as a source: audio members plus json/txt sidecars, as public corpora ship."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np

from losatok_data.layout import DatasetLayout
from losatok_data.ledger import read_failures
from losatok_data.reader import open_dataset
from losatok_data.verify import verify_dataset
from losatok_input.decoder import load_audio
from losatok_input.sources import input_key
from pipelines.encode import build_model
from pipelines.run import tokenize
from pipelines.testing import tiny_run


def add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def test_audio_members_become_samples_with_their_sidecar_metadata(ray_address, audio_dir, tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    with tarfile.open(shards / "part-000.tar", "w") as archive:
        add(archive, "utt/speech-1.flac", (audio_dir / "music.flac").read_bytes())
        add(
            archive,
            "utt/speech-1.json",
            json.dumps({"text": "a chord", "speaker": "s1", "mood": "calm"}).encode(),
        )
        add(archive, "clip-2.mp3", (audio_dir / "speech.mp3").read_bytes())
        add(archive, "clip-2.txt", b"The quick brown fox\n")
        add(archive, "broken-3.wav", b"RIFF not really" * 30)
        add(archive, "lonely-4.json", b"{}")
        add(archive, "._clip-2.mp3", b"\0\5\26\7" + b"\0" * 60)  # macOS litter
    with tarfile.open(shards / "part-001.tar", "w") as archive:
        add(archive, "tone-5.ogg", (audio_dir / "music.ogg").read_bytes())
        add(archive, "odd-6.recording", (audio_dir / "speech.mp3").read_bytes())  # probed: audio
        add(archive, "odd-6.json", json.dumps({"text": "odd"}).encode())

    config = tiny_run(shards, tmp_path / "ds", kind="wds", max_failure_fraction=0.5)
    summary = tokenize(config)
    assert summary.units == 2 and summary.inputs == 5 and summary.failures == 1  # one unit per tar
    # what the tars hold besides audio samples is counted, in the summary and the run log
    tar0_name = str(shards / "part-000.tar")
    assert summary.skipped["total"] == 2
    assert summary.skipped["by_reason"] == {
        "tar sample without audio (.json)": {"count": 1, "examples": [f"{tar0_name}#lonely-4"]},
        "hidden file": {"count": 1, "examples": [f"{tar0_name}#._clip-2.mp3"]},
    }
    (log,) = (tmp_path / "ds" / "runs").glob("run-*.json")
    assert json.loads(log.read_text())["skipped"]["total"] == 2
    assert verify_dataset(str(tmp_path / "ds")).ok

    tar0, tar1 = shards / "part-000.tar", shards / "part-001.tar"
    samples = {s.key: s for s in open_dataset(str(tmp_path / "ds")).iter_samples()}
    speech = samples[f"{input_key(f'{tar0}#utt/speech-1.flac')}_0000"]
    assert speech.metadata.text == "a chord" and speech.metadata.speaker == "s1"
    assert speech.metadata.extra == {"mood": "calm"} and speech.metadata.source == f"{tar0}#utt/speech-1.flac"
    clip = samples[f"{input_key(f'{tar0}#clip-2.mp3')}_0000"]
    assert clip.metadata.text == "The quick brown fox"
    direct = build_model(config.model).encode(load_audio(audio_dir / "speech.mp3")).item(0)["z"].numpy()
    np.testing.assert_allclose(clip.latent.astype(np.float32), direct, atol=2e-3 * np.abs(direct).max())
    assert f"{input_key(f'{tar1}#tone-5.ogg')}_0000" in samples and len(samples) == 4
    assert samples[f"{input_key(f'{tar1}#odd-6.recording')}_0000"].metadata.text == "odd"

    ledger = read_failures(DatasetLayout(str(tmp_path / "ds"))).to_pylist()
    assert [(r["location"], r["stage"]) for r in ledger] == [(f"{tar0}#broken-3.wav", "decode")]
