"""SemBo training on encoder features the pipeline wrote, and its export in the published layout."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch

from jobs.data import LoaderConfig
from jobs.train_sembo import TrainSemboConfig, train_loop
from losatok import LoSATok, load_semantic_encoder, tiny
from losatok_input.decoder import load_audio


def sembo_config(dataset: str, out, **changes) -> TrainSemboConfig:
    data = LoaderConfig(
        path=dataset,
        batch_frames=1500,
        max_frames=150,
        shuffle_buffer=8,
        normalize=False,
        semantic_field="semantic",
    )
    return TrainSemboConfig(data=data, preset="tiny", out_dir=str(out), **changes)


def test_sembo_training_lowers_both_terms_and_its_export_loads_strictly(
    feature_dataset, small_corpus, tmp_path
):
    config = sembo_config(feature_dataset, tmp_path / "sembo", max_steps=200, eval_every=100, lr=3e-3)
    result = train_loop(config)
    rows = [json.loads(line) for line in (tmp_path / "sembo" / "metrics.jsonl").read_text().splitlines()]
    first, last = rows[0], rows[-1]
    assert last["reconstruction"] < 0.5 * first["reconstruction"], (first, last)
    assert last["relation"] < first["relation"], (first, last)
    assert result["heldout_cosine"] > 0.8 and "heldout_relation" in last

    # the export loads strictly into the model library and its SemBo is the trained one
    torch.manual_seed(0)  # the pipeline's untrained tokenizer (seed 0) made the features
    model = LoSATok(tiny()).eval()
    report = load_semantic_encoder(model, result["export"])
    assert report.ok
    wav = load_audio(next(small_corpus.glob("speech_*.wav")))
    encoded = model.encode(wav).item(0)
    trained = torch.load(result["export"], weights_only=True)["state_dict"]
    down = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.GELU(), torch.nn.Linear(32, 16))
    down.load_state_dict(
        {k.removeprefix("bottleneck.downsample."): v for k, v in trained.items() if "downsample" in k}
    )
    with torch.no_grad():
        np.testing.assert_allclose(
            encoded["semantic_low"].numpy(), down(encoded["semantic_high"]).numpy(), atol=1e-5
        )


def test_cli_refuses_a_dataset_without_semantic_features(pipeline_dataset, tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.train_sembo",
            f"data.path={pipeline_dataset}",
            f"out_dir={tmp_path}",
            "max_steps=1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "semantic" in done.stderr


def test_two_ray_train_workers_train_sembo_in_lockstep(feature_dataset, tmp_path):
    from jobs.train_sembo import run
    from jobs.training import TrainerConfig

    config = sembo_config(
        feature_dataset, tmp_path / "sembo", max_steps=20, eval_every=10, trainer=TrainerConfig(num_workers=2)
    )
    run(config)
    finals = [json.loads((tmp_path / "sembo" / f"final-rank{r}.json").read_text()) for r in (0, 1)]
    assert finals[0]["step"] == finals[1]["step"] == 20
    assert finals[0]["param_checksum"] == finals[1]["param_checksum"]
    assert (tmp_path / "sembo" / "semantic_encoder.pth").exists()
