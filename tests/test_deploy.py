"""The KubeRay RayJob examples in deploy/ name commands our CLIs accept, with valid keys and values.

No Kubernetes runs here: each entrypoint is parsed as the shell would, its program must be one of
our console scripts, and its overrides are composed and built exactly as the CLI does.
"""

from __future__ import annotations

import shlex
from importlib.metadata import distribution
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module

from jobs.train_dit import build_config as build_train_dit
from pipelines.builders import build_tokenize_config

ROOT = Path(__file__).parents[1]
EXAMPLES = sorted((ROOT / "deploy" / "kuberay").glob("*.yaml"))
SCRIPTS = {e.name for e in distribution("losatok-pipelines").entry_points if e.group == "console_scripts"}
# console script -> (config module, config name, builder that refuses unknown keys and bad values)
CLIS = {
    "losatok-tokenize": ("pipelines.conf", "tokenize", build_tokenize_config),
    "losatok-train-dit": ("jobs.conf", "train_dit", build_train_dit),
}


def test_there_are_examples_for_tokenization_and_training():
    programs = {shlex.split(yaml.safe_load(p.read_text())["spec"]["entrypoint"])[0] for p in EXAMPLES}
    assert programs == set(CLIS)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_entrypoint_is_a_command_our_cli_accepts(example):
    job = yaml.safe_load(example.read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    program, *overrides = shlex.split(job["spec"]["entrypoint"])
    assert program in SCRIPTS
    module, name, build = CLIS[program]
    with initialize_config_module(module, version_base=None):
        config = build(compose(name, overrides=overrides))  # unknown keys and bad values fail here
    cluster = getattr(config, "cluster", None) or getattr(config, "trainer", None)
    assert cluster.address == "auto"  # joins the cluster KubeRay made instead of starting one
    spec = job["spec"]["rayClusterSpec"]
    assert spec["headGroupSpec"]["template"]["spec"]["containers"]
    assert all(group["template"]["spec"]["containers"] for group in spec["workerGroupSpecs"])


def test_a_wrong_key_in_an_entrypoint_would_be_caught():
    with initialize_config_module("jobs.conf", version_base=None), pytest.raises(Exception, match="trainr"):
        build_train_dit(compose("train_dit", overrides=["data.path=/x", "trainr.num_workers=2"]))


def zipped_names(root: Path, out: Path) -> list[str]:
    """What `ray job submit --working-dir root` uploads, packed by Ray's own packaging code."""
    import zipfile

    from ray._private.runtime_env.packaging import _zip_files

    _zip_files(str(root), [], str(out), include_gitignore=True)
    return zipfile.ZipFile(out).namelist()


def test_the_uploaded_working_dir_holds_the_code_and_nothing_else(tmp_path):
    root = tmp_path / "checkout"
    for name in ("out/dit/ckpt.pt", "demo/dataset/card.json", "data/a.wav", ".venv/bin/python", "tests/t.py",
                 "jobs/conf/x.yaml", "jobs/a.py", "pyproject.toml", "notes.txt"):  # fmt: skip
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    for ignore in (".rayignore", ".gitignore"):
        (root / ignore).write_text((ROOT / ignore).read_text())
    assert sorted(zipped_names(root, tmp_path / "a.zip")) == [
        "jobs/a.py",
        "jobs/conf/x.yaml",
        "pyproject.toml",
    ]

    names = zipped_names(ROOT, tmp_path / "repo.zip")  # this checkout, as the README's command sends it
    assert {n.split("/")[0] for n in names} == {
        "losatok",
        "losatok_data",
        "losatok_input",
        "losatok_storage",
        "schemas",
        "raycluster",
        "pipelines",
        "jobs",
        "pyproject.toml",
    }
    assert (tmp_path / "repo.zip").stat().st_size < 2 * 2**20
