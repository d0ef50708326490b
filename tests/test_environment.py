"""The installed torch, torchaudio and torchcodec must be the pinned, matching set: CI catches drift."""

from __future__ import annotations

import re
from pathlib import Path

from losatok.environment import decode_problems, installed_versions, version_problems

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def pinned() -> dict[str, str]:
    """The exact pins of pyproject.toml's dependencies (tomllib is not in Python 3.10)."""
    found = re.findall(r'^\s*"(torch|torchaudio|torchcodec)==([0-9.]+)",', PYPROJECT.read_text(), re.M)
    return dict(found)


def test_the_pins_are_exact_and_form_a_matching_set():
    pins = pinned()
    assert set(pins) == {"torch", "torchaudio", "torchcodec"}, "each of the three must be pinned with =="
    assert version_problems(pins["torch"], pins["torchaudio"], pins["torchcodec"]) == []


def test_the_installed_versions_are_the_pinned_ones_and_agree():
    installed, pins = installed_versions(), pinned()
    assert {name: v.split("+", 1)[0] for name, v in installed.items()} == pins
    assert version_problems(installed["torch"], installed["torchaudio"], installed["torchcodec"]) == []


def test_a_mismatched_set_is_named():
    # the very drift a fresh machine hit: pip's newest torch beside torchaudio's last release
    (problem,) = version_problems("2.15.0", "2.11.0", "0.11.1")[:1]
    assert "torch 2.15.0 and torchaudio 2.11.0" in problem
    assert any("pairs with torch 2.11" in p for p in version_problems("2.10.0+cu128", "2.10.0", "0.11.1"))
    assert version_problems("2.11.0+cpu", "2.11.0+cpu", "0.11.1") == []


def test_ffmpeg_decodes_through_torchcodec_and_torchaudio():
    assert decode_problems() == []
