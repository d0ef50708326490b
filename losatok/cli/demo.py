"""The embedded default job: make a little real audio and run it through a tiny LoSATok.

Writes `demo/` (speech from espeak-ng, music from sox, and their reconstructions) and prints
every feature's shape. The tiny model is untrained, so the reconstructions are noise: the
point is that the whole path runs on any machine in seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

from losatok.cli import reconstruct
from losatok.testing import synth_music, synth_speech


def main(argv: list[str] | None = None) -> int:
    out = Path(argv[0] if argv else "demo")
    out.mkdir(parents=True, exist_ok=True)
    inputs = [
        synth_speech(out / "speech.mp3", "LoSATok turns audio into twenty five latent frames per second."),
        synth_music(out / "music.flac", seconds=3.0),
    ]
    for path in inputs:
        code = reconstruct.main([str(path), str(out / f"{path.stem}.recon.wav"), "--preset", "tiny"])
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
