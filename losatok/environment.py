"""Is this environment's torch / torchaudio / torchcodec a working, matching set?

`python -m losatok.environment` is the set-up's smoke check (`make setup` stamps the venv only
after it passes) and the test suite runs the same checks, so CI catches drift:
- torchaudio must come from the same torch release (it refuses to import beside a torch built
  for another CUDA version, and its last release is 2.11);
- torchcodec pairs each of its releases with one torch release (its README's compatibility
  table: 0.10 <-> 2.10, 0.11 <-> 2.11);
- FFmpeg's shared libraries must be loadable: a small generated wav is decoded through
  torchcodec (the decoder we use) and `torchaudio.load` (which goes through torchcodec too).
"""

from __future__ import annotations

import math
import struct
import sys
import tempfile
import wave
from importlib import metadata
from pathlib import Path

# torchcodec release (major.minor) -> the torch release (major.minor) it was built against
TORCHCODEC_FOR_TORCH = {"0.8": "2.9", "0.9": "2.9", "0.10": "2.10", "0.11": "2.11"}


def _release(version: str) -> str:
    """'2.11.0+cu130' -> '2.11'."""
    return ".".join(version.split("+", 1)[0].split(".")[:2])


def version_problems(torch_version: str, torchaudio_version: str, torchcodec_version: str) -> list[str]:
    """What is wrong with this trio of installed versions (empty when they match)."""
    problems = []
    if _release(torch_version) != _release(torchaudio_version):
        problems.append(
            f"torch {torch_version} and torchaudio {torchaudio_version} are different releases; "
            "torchaudio only works with the torch release it was built with"
        )
    wanted = TORCHCODEC_FOR_TORCH.get(_release(torchcodec_version))
    if wanted is None:
        problems.append(f"torchcodec {torchcodec_version} is not a release this project has tested")
    elif wanted != _release(torch_version):
        problems.append(
            f"torchcodec {torchcodec_version} pairs with torch {wanted}, but torch {torch_version} is installed"
        )
    return problems


def installed_versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in ("torch", "torchaudio", "torchcodec")}


def write_tone(path: Path, seconds: float = 0.5, sample_rate: int = 22_050, hz: float = 440.0) -> Path:
    """A mono 16-bit sine wav written with the standard library alone."""
    count = int(seconds * sample_rate)
    frames = b"".join(
        struct.pack("<h", int(12_000 * math.sin(2 * math.pi * hz * i / sample_rate))) for i in range(count)
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(frames)
    return path


def decode_problems() -> list[str]:
    """Import the three packages and decode a generated wav through torchcodec and torchaudio."""
    try:
        import torch
        import torchaudio
        from torchcodec.decoders import AudioDecoder
    except Exception as err:  # the import itself is what this checks
        return [f"import failed: {type(err).__name__}: {err}"]
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        path = write_tone(Path(tmp) / "tone.wav")
        try:
            samples = AudioDecoder(str(path), sample_rate=16_000, num_channels=1).get_all_samples()
            if tuple(samples.data.shape) != (1, 8000) or samples.sample_rate != 16_000:
                problems.append(f"torchcodec decoded shape {tuple(samples.data.shape)}, expected (1, 8000)")
            wav, rate = torchaudio.load(str(path))
            if rate != 22_050 or wav.shape[-1] != 11_025:
                problems.append(
                    f"torchaudio.load gave {tuple(wav.shape)} at {rate} Hz, expected 11025 at 22050"
                )
            peak = float(torch.as_tensor(wav).abs().max())
            if not 0.3 < peak < 0.4:  # 12000 / 32768
                problems.append(f"torchaudio.load decoded a peak of {peak:.3f}, expected about 0.366")
        except Exception as err:
            problems.append(
                f"decoding a wav failed ({type(err).__name__}: {str(err).splitlines()[0]}); "
                "FFmpeg's shared libraries are needed: apt-get install ffmpeg"
            )
    return problems


def main() -> None:
    versions = installed_versions()
    problems = version_problems(versions["torch"], versions["torchaudio"], versions["torchcodec"])
    problems += decode_problems()
    described = ", ".join(f"{name} {version}" for name, version in versions.items())
    if problems:
        for problem in problems:
            print(f"environment check failed: {problem}", file=sys.stderr)
        print(f"installed: {described}; rerun `make setup` to repair", file=sys.stderr)
        sys.exit(1)
    print(f"environment ok: {described}; decoding through FFmpeg works")


if __name__ == "__main__":
    main()
