"""Real test audio made on the spot: speech from espeak-ng, music from sox, formats via ffmpeg.

Used by tests, benchmarks and the demo, so that nothing large is committed and nothing is
downloaded. Each helper raises a clear error when the Debian tool it needs is missing.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} is not installed; run `make setup` (as root it installs ffmpeg, sox, espeak-ng)"
        )
    return path


def _run(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()}")


def synth_speech(path: str | Path, text: str, sample_rate: int = 22_050, voice: str = "en") -> Path:
    """Speak `text` with espeak-ng into a mono wav at `sample_rate` Hz."""
    path = Path(path)
    raw = path.with_suffix(".espeak.wav")
    _run([_tool("espeak-ng"), "-v", voice, "-w", str(raw), text])
    convert(raw, path, sample_rate=sample_rate)
    raw.unlink()
    return path


def synth_music(
    path: str | Path,
    seconds: float,
    sample_rate: int = 44_100,
    channels: int = 2,
    notes: tuple[str, ...] = ("C4", "E4", "G4"),
) -> Path:
    """A plucked chord with a slow tremolo from sox: tonal, non-stationary, `channels` channels."""
    path = Path(path)
    raw = path.with_suffix(".sox.wav")
    args = [_tool("sox"), "-n", "-r", str(sample_rate), "-c", str(channels), str(raw), "synth", str(seconds)]
    args += [a for note in notes for a in ("pluck", note)] + ["tremolo", "3", "40", "gain", "-6"]
    _run(args)
    convert(raw, path, sample_rate=sample_rate)
    raw.unlink()
    return path


def convert(
    src: str | Path,
    dst: str | Path,
    sample_rate: int | None = None,
    channels: int | None = None,
    codec: str | None = None,
) -> Path:
    """Re-encode with ffmpeg; the container and codec follow `dst`'s extension (flac, mp3, ogg,
    opus, m4a, aiff), or `codec` names FFmpeg's encoder (e.g. "adpcm_ima_wav" in a .wav)."""
    dst = Path(dst)
    args = [_tool("ffmpeg"), "-loglevel", "error", "-y", "-i", str(src)]
    if sample_rate:
        args += ["-ar", str(sample_rate)]
    if channels:
        args += ["-ac", str(channels)]
    if codec:
        args += ["-c:a", codec]
    elif dst.suffix == ".ogg":
        args += ["-c:a", "libvorbis"]
    args.append(str(dst))
    _run(args)
    return dst


def write_float_wav(
    path: str | Path, samples: list[float] | tuple[float, ...], sample_rate: int = 16_000
) -> Path:
    """A mono IEEE-float WAV written byte by byte, so it can hold NaN or Inf (encoders refuse to)."""
    import struct

    data = struct.pack(f"<{len(samples)}f", *samples)
    fmt = struct.pack("<HHIIHH", 3, 1, sample_rate, sample_rate * 4, 4, 32)  # format 3 = IEEE float
    body = (
        b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    )
    path = Path(path)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def make_mixed_corpus(root: str | Path, long_seconds: float = 65.0) -> dict[str, list[Path]]:
    """A small corpus of every kind of input a real one holds.

    Good: wav, flac, mp3, ogg, m4a, opus and aiff at 8 to 48 kHz, mono and stereo, speech and
    music, an IMA ADPCM wav (which torchcodec 0.11 decodes short: `losatok.audio` redoes it
    with the ffmpeg command line), one file of `long_seconds` (cut into segments), one in a
    subfolder. Bad: random bytes named .flac, an empty .wav, a text file named .ogg.
    Returns {"good": [...], "bad": [...]}.
    """
    root = Path(root)
    (root / "nested").mkdir(parents=True, exist_ok=True)
    good = [
        synth_speech(root / "speech_22k.wav", "Tokenize every corpus exactly once.", sample_rate=22_050),
        synth_speech(
            root / "nested" / "speech_16k.mp3", "Resume after a crash and lose nothing.", sample_rate=16_000
        ),
        synth_music(root / "music_44k_stereo.flac", seconds=3.0, sample_rate=44_100, channels=2),
        synth_music(
            root / "long_music_8k.wav",
            seconds=long_seconds,
            sample_rate=8_000,
            channels=1,
            notes=("A3", "E4"),
        ),
    ]
    good.append(convert(good[2], root / "music_48k.ogg", sample_rate=48_000))
    good.append(convert(good[0], root / "speech_8k.m4a", sample_rate=8_000))
    good.append(convert(good[1], root / "speech_48k_stereo.opus", sample_rate=48_000, channels=2))
    good.append(convert(good[0], root / "speech_11k_adpcm.wav", sample_rate=11_025, codec="adpcm_ima_wav"))
    good.append(convert(good[2], root / "music_22k_stereo.aiff", sample_rate=22_050))
    bad = [root / "corrupt.flac", root / "empty.wav", root / "notes.ogg"]
    bad[0].write_bytes(bytes(range(256)) * 40)
    bad[1].write_bytes(b"")
    bad[2].write_text("these are not audio samples\n" * 20)
    return {"good": good, "bad": bad}


# The format corpus: ten real recordings in ten containers (one with an extension no list
# knows), and six files that are not audio, with how a listing counts them.
FORMAT_CORPUS_AUDIO = [
    "a.oga",
    "b.opus",
    "c.m4a",
    "d.aiff",
    "e.caf",
    "f.wv",
    "g.mka",
    "h.au",
    "sub/i.wav",
    "sub/j.clip",
]
FORMAT_CORPUS_SKIPPED = {
    "not audio (.txt)": 1,
    "not audio (.json)": 1,
    "hidden file": 2,
    "no audio stream (.mkv, probed)": 1,
    "not a format FFmpeg opens (.dat, probed)": 1,
}


def make_format_corpus(root: str | Path, scratch: str | Path) -> Path:
    """Write the format corpus to `root` (`scratch` holds the source speech): FORMAT_CORPUS_AUDIO,
    plus sidecars, macOS litter, a video without sound and a text file."""
    root, scratch = Path(root), Path(scratch)
    (root / "sub").mkdir(parents=True, exist_ok=True)
    speech = synth_speech(scratch / "speech.wav", "one two three", sample_rate=16_000)
    for name in FORMAT_CORPUS_AUDIO:
        if name.endswith(".clip"):  # ogg vorbis under a name no list knows: found by probing
            _run(
                [
                    _tool("ffmpeg"),
                    "-loglevel",
                    "error",
                    "-y",
                    "-i",
                    str(speech),
                    "-c:a",
                    "libvorbis",
                    "-f",
                    "ogg",
                    str(root / name),
                ]
            )
        else:
            convert(speech, root / name)
    (root / "notes.txt").write_text("one two three")
    (root / "meta.json").write_text("{}")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "._a.oga").write_bytes(b"\0\5\26\7" + b"\0" * 60)  # a macOS resource fork
    _run(
        [
            _tool("ffmpeg"),
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=duration=1:size=32x32:rate=5",
            str(root / "video.mkv"),
        ]
    )
    (root / "mystery.dat").write_text("not audio at all")
    return root


def main(argv: list[str] | None = None) -> int:
    """`python -m losatok_input.testing DIR`: write the mixed corpus to DIR (kept if already there)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0] if args else "demo/corpus")
    if root.exists() and any(root.iterdir()):
        print(f"corpus {root} already exists; keeping it")
        return 0
    made = make_mixed_corpus(root)
    print(f"wrote {len(made['good'])} recordings and {len(made['bad'])} broken files to {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def spoken_sentences(root: str | Path, texts: Sequence[str], sample_rate: int = 16_000) -> list[np.ndarray]:
    """Each of `texts` spoken by espeak-ng as (S_i,) int16 samples at `sample_rate`, trimmed of
    leading and trailing silence (below -50 dBFS), so the only pauses of speech joined from them
    are the ones put between them (`long_form_speech`)."""
    spoken = []
    for index, text in enumerate(texts):
        path = synth_speech(Path(root) / f"sentence_{index:03d}.wav", text, sample_rate=sample_rate)
        with wave.open(str(path)) as f:
            pcm = np.frombuffer(f.readframes(f.getnframes()), dtype=np.int16)
        loud = np.flatnonzero(np.abs(pcm) > 100)  # -50 dBFS
        spoken.append(pcm[loud[0] : loud[-1] + 1])
    return spoken


def long_form_speech(
    sentences: Sequence[np.ndarray],
    seconds: float,
    seed: int,
    pause_seconds: tuple[float, float] = (0.3, 0.8),
    sample_rate: int = 16_000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sentences in random order, each followed by digital silence of a length drawn uniformly
    from `pause_seconds`, until about `seconds` of audio: long-form speech whose pauses lie at
    known places. Returns (int16 samples (S,), pause starts (P,), pause ends (P,)) in samples."""
    rng = np.random.default_rng(seed)
    pieces, starts, ends, at = [], [], [], 0
    while at < seconds * sample_rate:
        speech = sentences[rng.integers(len(sentences))]
        gap = int(rng.uniform(*pause_seconds) * sample_rate)
        pieces += [speech, np.zeros(gap, np.int16)]
        starts.append(at + len(speech))
        ends.append(at + len(speech) + gap)
        at += len(speech) + gap
    return np.concatenate(pieces), np.array(starts), np.array(ends)
