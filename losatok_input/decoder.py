"""Audio I/O: decode any common format to mono at the model rate, and batch.

Decoding goes through torchcodec's `AudioDecoder` (FFmpeg underneath), so wav, flac, mp3,
ogg/vorbis, opus and m4a/aac all read the same way. FFmpeg's swresample does the downmix and
the resampling frame by frame inside the decoder, so an input is never held at its native rate
in full (a 2-hour 48 kHz stereo file would be 2.7 GB of float32). All spans of one file come
from a single open of it (`decode_spans`); spans of a PCM wav are read by seeking to their
bytes (`PcmLayout`), those of compressed formats in one pass (torchcodec 0.11 cannot seek).

Every failure is an `AudioError` that names the file and the problem; nothing is ever replaced
by silence.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Sequence
from typing import BinaryIO

import torch

from losatok.audio import to_mono
from losatok_input.ffmpeg_cli import decode_with_ffmpeg_cli
from losatok_input.wav import PCM_RUN_GAP_SECONDS, WAV_NAMES, PcmLayout, range_reader

log = logging.getLogger(__name__)
AudioSource = str | os.PathLike | bytes | BinaryIO
Span = tuple[float | None, float | None]  # (start, end) in seconds of the source; None = its edge


class AudioError(ValueError):
    """An input that cannot become a waveform; `source` names it, `reason` says why."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def describe_source(source: AudioSource, name: str | None = None) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return getattr(source, "name", None) or f"<{type(source).__name__} audio>"


def check_waveform(wav: torch.Tensor, source: str) -> torch.Tensor:
    """Refuse an empty waveform or one holding NaN/Inf; returns `wav` unchanged."""
    if wav.numel() == 0:
        raise AudioError(source, "no audio samples (empty or zero-length stream)")
    # a sum is NaN/Inf when any sample is, and costs one pass without a mask; only then count
    if not bool(torch.isfinite(wav.sum())):
        bad = int((~torch.isfinite(wav)).sum())
        if bad:
            raise AudioError(source, f"{bad} samples are NaN or infinite")
    return wav


def _reason(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# swresample mixes stereo to mono as (L + R) / sqrt(2) and does not renormalise float output;
# this factor turns that into the channel mean, the downmix the model was trained with
_STEREO_TO_MEAN = 0.5**0.5


class MonoDecoder:
    """torchcodec `AudioDecoder`s over one source that yield mono float32 at `sample_rate` Hz.

    `source` may be a path, bytes, or a binary file object with read/seek (an fsspec file
    reads by range requests). FFmpeg's swresample resamples each decoded frame with its
    default filter (see docs/decoding.md), so memory stays at the output rate. FFmpeg also
    downmixes mono and stereo; a source with more channels is resampled per channel and
    averaged here. Either way the result is the channel mean.

    torchcodec 0.11 leaves the resampler's delay in its buffer across a seek (later ranges of
    one decoder come out about 1 ms late), so each `span` call opens a fresh decoder over the
    same source; a fresh decoder's first range is exact. torchcodec 0.11 also reaches a start
    time by decoding from the stream's beginning (fixed upstream after 0.11, torchcodec PR
    1449), so `decode_spans` reads all spans of a compressed source in one range; a PCM wav
    (`pcm`) is read by seeking to a span's bytes instead. Times are seconds from the first
    decoded sample (an MP3's encoder delay is not counted), as in a full decode.
    Raises AudioError naming the source when it is missing, empty or not audio.
    """

    def __init__(self, source: AudioSource, sample_rate: int = 16_000, name: str | None = None) -> None:
        self.label = describe_source(source, name)
        self.sample_rate = sample_rate
        if isinstance(source, (bytes, bytearray, memoryview)):
            if len(source) == 0:
                raise AudioError(self.label, "empty file (0 bytes)")
            source = bytes(source)
        elif isinstance(source, (str, os.PathLike)):
            if not os.path.exists(source):
                raise AudioError(self.label, "file does not exist")
            if os.path.getsize(source) == 0:
                raise AudioError(self.label, "empty file (0 bytes)")
            source = os.fspath(source)
        self.source = source
        # a PCM wav is known from its header (one small read) and needs no probe by FFmpeg, which
        # would read ~0.4 MB. The header is read first from bytes, a caller's file object and a
        # file named like a wav; a path or remote file of another name is probed first (no read
        # more), and a PCM stream found there under another name has its header read then.
        stored = isinstance(source, str) or hasattr(source, "read_range")
        header_first = self.label.lower().endswith(WAV_NAMES) or not stored
        self.pcm = self._pcm_layout() if header_first else None
        self._decoder = None
        if self.pcm is not None:
            self.source_channels, self.codec = self.pcm.channels, "pcm"
            self.begin, self.header_seconds = 0.0, self.pcm.seconds
        else:
            self._decoder = self._open(num_channels=1)
            metadata = self._decoder.metadata
            self.source_channels = metadata.num_channels or 1
            self.codec = metadata.codec or ""
            self.begin = metadata.begin_stream_seconds or 0.0
            self.header_seconds = metadata.duration_seconds_from_header  # None: the container states none
            if not header_first and self.codec.startswith("pcm_"):
                self.pcm = self._pcm_layout()
        self.mix = 1 if self.source_channels <= 2 else None  # None: every channel, averaged here
        if self.mix is None:
            self._decoder = None  # the probe mixed to one channel; spans open their own
        self.gain = _STEREO_TO_MEAN if self.source_channels == 2 else 1.0

    def _open(self, num_channels: int | None, source: AudioSource | None = None):
        from torchcodec.decoders import AudioDecoder  # FFmpeg's libraries load on first use

        source = self.source if source is None else source
        if hasattr(source, "seek"):
            source.seek(0)
        try:
            return AudioDecoder(source, sample_rate=self.sample_rate, num_channels=num_channels)
        except Exception as err:  # FFmpeg's messages vary by container; keep its words
            raise AudioError(self.label, f"cannot decode as audio ({_reason(err)})") from err

    def _handle(self) -> contextlib.AbstractContextManager[BinaryIO]:
        """The source as a binary file object, to be used in a `with` block (a file object given
        by the caller is not closed). Reading a caller's file object moves the position under
        the open decoder, which is then dropped: the next span opens a fresh one (`_open`
        seeks to the start)."""
        if isinstance(self.source, str):
            return open(self.source, "rb")
        if isinstance(self.source, bytes):
            return io.BytesIO(self.source)
        self._decoder = None
        return contextlib.nullcontext(self.source)

    def _pcm_layout(self) -> PcmLayout | None:
        with self._handle() as handle:
            size = getattr(handle, "size", None)
            size = size if isinstance(size, int) else handle.seek(0, io.SEEK_END)
            return PcmLayout.read(range_reader(handle), size)

    def _mono(self, wav: torch.Tensor) -> torch.Tensor:
        """(C, S) decoder output -> (S,) channel mean; C = 1 unless the source has more than two."""
        wav = to_mono(wav) if wav.shape[0] > 1 else wav[0]  # (S,)
        if self.gain != 1.0:
            wav.mul_(self.gain)  # in place: the decoder's output is ours
        return wav

    def _shortfall(self, start: float | None, end: float | None, samples: int) -> str | None:
        """Why `samples` is far fewer than the header's duration promises for [start, end), or None.

        torchcodec 0.11 silently drops most of an ADPCM wav (a quarter of it comes out); a file
        cut short (a partial download) also decodes short. Either way the decode is checked once
        more by the FFmpeg command line (`_cli_span`). Slack: 10 % and 0.5 s, for headers that
        estimate (an MP3 without a Xing header, ADTS AAC) and codecs' padding.
        """
        if self.header_seconds is None:
            return None
        stop = self.header_seconds if end is None else min(end, self.header_seconds)
        expected = (stop - (start or 0.0)) * self.sample_rate
        if samples >= 0.9 * expected - 0.5 * self.sample_rate:
            return None
        rate = self.sample_rate
        return f"decoded {samples / rate:.2f} s of the {expected / rate:.2f} s its header states"

    def _cli_span(self, start: float | None, end: float | None, shortfall: str) -> torch.Tensor:
        """(S,) of [start, end) decoded by the `ffmpeg` command line, when torchcodec came out short.

        The command line's result stands either way: the whole stream when torchcodec lost part
        of it, or the same short audio when the file itself is short (logged).
        """
        try:
            wav = decode_with_ffmpeg_cli(self.source, self.sample_rate, self.source_channels, start, end)
        except (OSError, RuntimeError) as err:
            raise AudioError(self.label, f"{shortfall}, and the ffmpeg command line failed: {err}") from err
        again = self._shortfall(start, end, wav.numel())
        log.warning(
            "%s: torchcodec %s; the ffmpeg command line decoded %.2f s%s",
            self.label,
            shortfall,
            wav.numel() / self.sample_rate,
            " (the file is shorter than its header states)" if again else " (taken)",
        )
        return wav

    def _pcm_span(self, start: float, end: float | None) -> torch.Tensor:
        """(S,) of [start, end) seconds of a PCM wav, decoded from those bytes alone (`PcmLayout`).

        The samples are those of a full decode at the same indices (round(t * rate)): the window
        starts on the grid where native and output samples meet, and its edges are padded.
        """
        with self._handle() as handle:
            window = self.pcm.window(range_reader(handle), start, end, self.sample_rate)
            if window is None:
                raise AudioError(self.label, f"span {start}-{end} s holds no samples")
            view, origin = window  # origin: the window's first sample on the output grid
            decoder = self._open(self.mix, view)
            try:
                samples = decoder.get_samples_played_in_range(0.0, None)
            except Exception as err:  # a read error part-way
                raise AudioError(self.label, f"cannot decode as audio ({_reason(err)})") from err
        first = round(start * self.sample_rate) - origin
        last = None if end is None else round(end * self.sample_rate) - origin
        return self._mono(samples.data)[first:last]

    def span(self, start: float | None = None, end: float | None = None) -> torch.Tensor:
        """(S,) float32 of [start, end) seconds of the source (None: its edge), read by seeking.

        Raises AudioError for an empty span, NaN/Inf samples or a decoder error part-way.
        """
        direct = None
        if self.pcm is not None:  # one channel at the output rate: the bytes are the samples
            with self._handle() as handle:
                direct = self.pcm.samples(range_reader(handle), start, end, self.sample_rate)
        if direct is not None:
            wav = torch.from_numpy(direct)
        elif self.pcm is not None and start:
            wav = self._pcm_span(start, end)
        else:
            decoder, self._decoder = self._decoder or self._open(self.mix), None
            first = self.begin + (start or 0.0)
            try:
                samples = decoder.get_samples_played_in_range(
                    first, None if end is None else self.begin + end
                )
            except Exception as err:  # a corrupt stream part-way, or a start past the end
                raise AudioError(self.label, f"cannot decode as audio ({_reason(err)})") from err
            wav = self._mono(samples.data)
            shortfall = self._shortfall(start, end, wav.numel())
            if shortfall is not None:
                wav = self._cli_span(start, end, shortfall)
        if (start is not None or end is not None) and wav.numel() == 0:
            raise AudioError(self.label, f"span {start}-{end} s holds no samples")
        return check_waveform(wav, self.label).contiguous()


def plan_runs(spans: Sequence[Span], max_gap: float | None) -> list[tuple[float, float | None, list[int]]]:
    """Group spans into runs decoded as one range each: [(start, end or None, span indices)].

    Spans are taken by start; a span joins the current run unless it begins more than
    `max_gap` seconds after the run's end (None: never, one run for all).
    """
    order = sorted(range(len(spans)), key=lambda i: (spans[i][0] or 0.0, i))
    runs: list[tuple[float, float | None, list[int]]] = []
    for index in order:
        start, end = spans[index][0] or 0.0, spans[index][1]
        if runs:
            run_start, run_end, members = runs[-1]
            near = max_gap is None or run_end is None or start <= run_end + max_gap
            if near:
                runs[-1] = (run_start, None if run_end is None or end is None else max(run_end, end), members)
                members.append(index)
                continue
        runs.append((start, end, [index]))
    return runs


def decode_spans(
    source: AudioSource, spans: Sequence[Span], sample_rate: int = 16_000, name: str | None = None
) -> list[torch.Tensor | AudioError]:
    """Decode several spans of one source from a single open of it.

    Spans are read in runs (`plan_runs`): each run is one range decoded after one seek, and
    its spans are cut from it, so spans covering a file cost one decode of the file. A run is
    held at the output rate (mono float32, 230 MB per hour at 16 kHz), never the source's.
    Args:
        spans: (start, end) in seconds of the source; None means its beginning or its end.
    Returns:
        one entry per span, in the given order: a (S,) float32 waveform at `sample_rate`, or the
        AudioError that span met (empty span, NaN/Inf samples, a decoder error part-way).
    Raises:
        AudioError when the source cannot be opened at all (missing, empty, not audio).
    """
    decoder = MonoDecoder(source, sample_rate, name)
    results: list[torch.Tensor | AudioError] = [AudioError(decoder.label, "not decoded")] * len(spans)
    # torchcodec 0.11 decodes from the stream's start to reach any span, so for a compressed
    # source one run (one pass from the first span's start to the last one's end) is the
    # cheapest plan; a PCM wav is read by seeking, so a gap splits its runs
    max_gap = PCM_RUN_GAP_SECONDS if decoder.pcm is not None else None
    for run_start, run_end, members in plan_runs(spans, max_gap=max_gap):
        try:
            wav = decoder.span(run_start, run_end)
        except AudioError as err:
            for index in members:
                results[index] = err
            continue
        for index in members:
            start, end = spans[index]
            first = round(((start or 0.0) - run_start) * sample_rate)
            last = wav.numel() if end is None else first + round((end - (start or 0.0)) * sample_rate)
            part = wav[first:last]
            if part.numel() == 0:
                results[index] = AudioError(decoder.label, f"span {start}-{end} s holds no samples")
            else:
                results[index] = part  # a view of the run: no copy; pickling copies only the view
    return results


def load_audio(
    source: AudioSource,
    sample_rate: int = 16_000,
    start: float | None = None,
    end: float | None = None,
    name: str | None = None,
) -> torch.Tensor:
    """Decode `source` (path, bytes or binary file object) to a mono float32 waveform.

    Args:
        sample_rate: output rate in Hz (16 000 for the published model).
        start, end: optional span in seconds of the source to keep (read by seeking).
        name: how errors name the source (e.g. its s3:// URI when `source` is bytes).
    Returns:
        (S,) float32 waveform at `sample_rate`.
    Raises:
        AudioError naming the source: unreadable, not audio, empty, NaN/Inf, or an empty span.
    """
    (result,) = decode_spans(source, [(start, end)], sample_rate, name)
    if isinstance(result, AudioError):
        raise result
    return result


def probe_audio(source: str | os.PathLike | BinaryIO) -> str | None:
    """None if FFmpeg opens `source` (a path or a seekable binary file) and finds an audio
    stream in it, else a short reason ("not a format FFmpeg opens", "no audio stream").

    Reads the header only (FFmpeg's probe: about 100-400 kB), not the whole file; it decides
    what counts as audio for files whose extension does not (losatok_input.rule).
    """
    from torchcodec.decoders import AudioDecoder  # torchaudio's own decoder, imported late

    try:
        AudioDecoder(source)
    except Exception as err:  # FFmpeg's errors carry no type: sort them by their words
        return "no audio stream" if "audio stream" in str(err) else "not a format FFmpeg opens"
    return None
