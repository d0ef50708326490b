"""Resampler quality: FFmpeg's swresample inside torchcodec (what `load_audio` uses) and
torchaudio's default sinc resampler (what it used before), against a high-quality reference.

    python bench/resample_quality.py

Reference: torchaudio's Kaiser-windowed sinc with a 64-zero-crossing filter, rolloff 0.9475
and beta 14.77 (librosa's "kaiser_best"), run on the native-rate float32 signal.
  sweep      a linear chirp from 0 to the Nyquist rate at 44.1 and 48 kHz (amplitude 0.5, float
             wav, so no quantisation noise). Passband error: the worst |level error| in dB over
             STFT frames whose instantaneous frequency is 50 Hz - 7.2 kHz, frame energy against the
             reference's. Aliasing: the worst
             output level (dB relative to the input) over frames whose frequency is above
             8.8 kHz, which fold back into the band; and above 8.0 kHz (the transition band too).
  log-mel    `losatok.metrics.mel_distance` (mean |log mel difference|) to the reference on
             speech (espeak-ng, 22.05 kHz) and music (sox, 44.1 kHz stereo, 48 kHz stereo).
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torchaudio  # noqa: E402

from losatok.metrics import mel_distance  # noqa: E402
from losatok_input.decoder import load_audio  # noqa: E402
from losatok_input.testing import convert, synth_music, synth_speech, write_float_wav  # noqa: E402

TARGET = 16_000


def reference(wav: torch.Tensor, rate: int) -> torch.Tensor:
    return torchaudio.functional.resample(
        wav,
        rate,
        TARGET,
        lowpass_filter_width=64,
        rolloff=0.9475,
        resampling_method="sinc_interp_kaiser",
        beta=14.769656459379492,
    )


def before(wav: torch.Tensor, rate: int) -> torch.Tensor:
    return torchaudio.functional.resample(wav, rate, TARGET)


def chirp(rate: int, seconds: float = 8.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(0.5-amplitude linear chirp 0 -> rate/2 at `rate`, its instantaneous frequency (Hz) at 16 kHz)."""
    t = torch.arange(int(seconds * rate), dtype=torch.float64) / rate
    k = (rate / 2) / seconds
    wav = 0.5 * torch.sin(math.pi * k * t * t)
    return wav.float(), k * torch.arange(int(seconds * TARGET), dtype=torch.float64) / TARGET


def sweep_figures(out: torch.Tensor, ref: torch.Tensor, freq: torch.Tensor) -> tuple[float, float, float]:
    """(passband error dB against the reference, aliasing above 8.8 kHz dB, above 8 kHz dB) of a
    resampled chirp; aliasing is the output's frame energy relative to its passband median."""
    n_fft, hop = 1024, 256
    window = torch.hann_window(n_fft, dtype=torch.float64)
    spec, spec_ref = (
        torch.stft(x.double(), n_fft, hop, window=window, center=False, return_complex=True).abs()
        for x in (out, ref)
    )
    frames = spec.shape[-1]
    centre = freq[torch.arange(frames) * hop + n_fft // 2]
    level = 10 * torch.log10((spec**2).sum(dim=0) / (spec_ref**2).sum(dim=0))
    passband = (centre > 50) & (centre < 7200)
    energy = (spec**2).sum(dim=0)
    energy = 10 * torch.log10(energy / energy[passband].median() + 1e-20)  # dB relative to the input's level
    return (
        float(level[passband].abs().max()),
        float(energy[centre > 8800].max()),
        float(energy[centre > 8000].max()),
    )


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="losatok-resample-"))
    print(
        "| sweep at | resampler | passband error (dB, 50 Hz-7.2 kHz) | aliasing > 8.8 kHz (dB) | aliasing > 8 kHz (dB) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for rate in (44_100, 48_000):
        wav, freq = chirp(rate)
        path = work / f"chirp_{rate}.wav"
        write_float_wav(path, wav.tolist(), sample_rate=rate)  # IEEE float: no quantisation noise
        outputs = {
            "swresample (load_audio)": load_audio(path),
            "torchaudio default": before(wav, rate),
            "reference (kaiser, 64 zero crossings)": reference(wav, rate),
        }
        ref = outputs["reference (kaiser, 64 zero crossings)"][: len(freq)]
        for name, out in outputs.items():
            passband, alias, alias_transition = sweep_figures(out[: len(freq)], ref, freq)
            print(f"| {rate} Hz | {name} | {passband:.3f} | {alias:.1f} | {alias_transition:.1f} |")

    speech = synth_speech(
        work / "speech.wav", "Resampling must keep every word intelligible and every note in tune. " * 3
    )
    music = synth_music(work / "music.wav", seconds=20.0, sample_rate=44_100, channels=2)
    music48 = convert(music, work / "music48.wav", sample_rate=48_000)
    print("| signal | swresample (load_audio) | torchaudio default |")
    print("| --- | --- | --- |")
    for name, path in (
        ("speech 22.05 kHz", speech),
        ("music 44.1 kHz stereo", music),
        ("music 48 kHz stereo", music48),
    ):
        native, rate = torchaudio.load(str(path))
        native = native.mean(0)
        ref = reference(native, rate)
        ours = load_audio(path)
        print(f"| {name} | {mel_distance(ref, ours):.4f} | {mel_distance(ref, before(native, rate)):.4f} |")


if __name__ == "__main__":
    main()
