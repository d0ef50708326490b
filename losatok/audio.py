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
import math
import os
import shutil
import struct
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import torch
import torchaudio

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


def to_mono(wav: torch.Tensor) -> torch.Tensor:
    """(C, S) -> (S,) by averaging channels."""
    return wav.mean(dim=0) if wav.dim() == 2 else wav


def resample(wav: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """Band-limited (windowed sinc) resampling along the last axis; a no-op at equal rates."""
    if orig_sr == target_sr:
        return wav
    return torchaudio.functional.resample(wav, orig_sr, target_sr)


def _reason(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# A span of a PCM wav is decoded from its own bytes, plus this much audio on each side, so the
# resampler's edge effects fall outside it (swresample's default filter spans ~1 ms at 16 kHz)
PCM_WINDOW_PAD_SECONDS = 0.05
# Spans of a PCM wav further apart than this are read as separate runs, each by seeking: reading
# 5 s more (at most 0.9 MB of 48 kHz stereo) costs about what one more open and seek does
PCM_RUN_GAP_SECONDS = 5.0
PCM_HEADER_BYTES = 1 << 16  # a wav's chunks before its samples are looked for in this much
PCM_READ_BYTES = 4 << 20  # a window's bytes are read in pieces of this size (one request each)
WAV_NAMES = (".wav", ".wave", ".bwf")  # a remote file named so has its header read first
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # data chunk sizes written by streaming recorders

RangeReader = Callable[[int, int], bytes]  # (start, end) in bytes -> those bytes (fewer at the end)


def range_reader(handle: BinaryIO) -> RangeReader:
    """Byte ranges of a binary file object: its own `read_range(start, end)` when it has one
    (one request for exactly those bytes on an object store), else seek and read."""
    own = getattr(handle, "read_range", None)
    if own is not None:
        return own

    def read(start: int, end: int) -> bytes:
        handle.seek(start)
        return handle.read(end - start)

    return read


@dataclass(frozen=True)
class PcmLayout:
    """Where the samples of a RIFF/WAVE file of PCM (any width, integer or float) lie.

    Its spans are read by seeking to their bytes: a window of the data chunk behind a header of
    its own is handed to FFmpeg, which then reads and resamples only that window, wherever it
    lies in the file (`window`). torchcodec 0.11 would decode from the file's start instead.
    """

    fmt: bytes  # the fmt chunk's body, copied into each window's header
    data_offset: int  # bytes from the file's start to the first sample frame
    frames: int  # sample frames in the data chunk
    block_align: int  # bytes per sample frame (all channels)
    sample_rate: int  # native rate, Hz
    channels: int

    @classmethod
    def read(cls, read: RangeReader, file_size: int) -> PcmLayout | None:
        """The layout of a RIFF/WAVE file of PCM, from its first PCM_HEADER_BYTES (one read);
        None for anything else (another container, a compressed codec, an unknown data size,
        samples further in), which then decodes as a whole."""
        head = read(0, min(file_size, PCM_HEADER_BYTES))
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        fmt, position = None, 12
        while position + 8 <= len(head):
            name, size = (
                head[position : position + 4],
                struct.unpack("<I", head[position + 4 : position + 8])[0],
            )
            if name == b"fmt ":
                fmt = head[position + 8 : position + 8 + size]
            elif name == b"data":
                if fmt is None or len(fmt) < 16 or size in _UNKNOWN_SIZES:
                    return None
                tag, channels, rate, _, block_align = struct.unpack("<HHIIH", fmt[:14])
                if tag == 0xFFFE and len(fmt) >= 40:  # WAVE_FORMAT_EXTENSIBLE: the subformat's tag
                    tag = struct.unpack("<H", fmt[24:26])[0]
                if tag not in (1, 3) or not block_align or not rate or not channels:  # 1: integer, 3: float
                    return None
                available = max(0, file_size - (position + 8))
                frames = min(size, available) // block_align
                return cls(fmt, position + 8, frames, block_align, rate, channels)
            position += 8 + size + (size & 1)  # chunks are padded to even sizes
        return None

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate

    def window(
        self, read: RangeReader, start: float, end: float | None, out_rate: int
    ) -> tuple[BinaryIO, int] | None:
        """A file object holding [start - pad, end + pad) seconds as a wav of its own, and the
        index of its first sample on the output grid (exact: the window starts where a native
        sample meets an output sample). None when the span starts past the data."""
        period = self.sample_rate // math.gcd(self.sample_rate, out_rate)  # native samples per grid step
        first = max(0, math.floor((start - PCM_WINDOW_PAD_SECONDS) * self.sample_rate)) // period * period
        last = self.frames
        if end is not None:
            last = min(last, math.ceil((end + PCM_WINDOW_PAD_SECONDS) * self.sample_rate))
        if first >= last:
            return None
        size = (last - first) * self.block_align
        header = (
            b"RIFF" + struct.pack("<I", 4 + 8 + len(self.fmt) + 8 + size) + b"WAVE"
            + b"fmt " + struct.pack("<I", len(self.fmt)) + self.fmt + b"data" + struct.pack("<I", size)
        )  # fmt: skip
        view = _Window(read, header, self.data_offset + first * self.block_align, size)
        return view, first * out_rate // self.sample_rate


class _Window(io.RawIOBase):
    """A read-only file object: `header`, then `size` bytes of a file from `offset`, fetched
    PCM_READ_BYTES at a time through `read` (so an object store sends exactly these bytes)."""

    def __init__(self, read: RangeReader, header: bytes, offset: int, size: int) -> None:
        super().__init__()
        self.fetch, self.header, self.offset = read, header, offset
        self.size = len(header) + size
        self.position = 0
        self.piece_start, self.piece = 0, b""  # the bytes fetched last, by their window position

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def tell(self) -> int:
        return self.position

    def read(self, size: int = -1) -> bytes:
        size = self.size - self.position if size is None or size < 0 else size
        size = max(0, min(size, self.size - self.position))
        if not size:
            return b""
        if self.position < len(self.header):
            part = self.header[self.position : self.position + size]
        else:
            if not self.piece_start <= self.position < self.piece_start + len(self.piece):
                end = min(self.size, self.position + max(size, PCM_READ_BYTES))
                file_start = self.offset + self.position - len(self.header)
                self.piece_start = self.position
                self.piece = self.fetch(file_start, file_start + end - self.position)
                if not self.piece:
                    return b""  # the file ends early (cut short after its header was written)
            first = self.position - self.piece_start
            part = self.piece[first : first + size]
        self.position += len(part)
        return part


# swresample mixes stereo to mono as (L + R) / sqrt(2) and does not renormalise float output;
# this factor turns that into the channel mean, the downmix the model was trained with
_STEREO_TO_MEAN = 0.5**0.5


class MonoDecoder:
    """torchcodec `AudioDecoder`s over one source that yield mono float32 at `sample_rate` Hz.

    `source` may be a path, bytes, or a binary file object with read/seek (an fsspec file
    reads by range requests). FFmpeg's swresample resamples each decoded frame with its
    default filter (see README, "Decoding"), so memory stays at the output rate. FFmpeg also
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
        if self.pcm is not None and start:
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


def decode_with_ffmpeg_cli(
    source: AudioSource, sample_rate: int, channels: int, start: float | None = None, end: float | None = None
) -> torch.Tensor:
    """(S,) float32 channel mean of [start, end) seconds of `source` at `sample_rate`, decoded by
    the `ffmpeg` command line (a path is opened by FFmpeg; bytes or a file object are piped to
    it). A fallback for streams torchcodec decodes short; memory is that of the output rate.

    Raises OSError when `ffmpeg` is not on the PATH, RuntimeError when it fails.
    """
    executable = shutil.which("ffmpeg")
    if executable is None:
        raise OSError("ffmpeg is not on the PATH (apt-get install ffmpeg)")
    path = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
    args = [executable, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", path or "pipe:0"]
    # trimmed by sample counts after resampling, not by timestamps (the streams this serves are
    # those whose timestamps mislead), on the grid of a full decode: round(t * rate)
    trim = f"start_sample={round((start or 0.0) * sample_rate)}"
    if end is not None:
        trim += f":end_sample={round(end * sample_rate)}"
    args += ["-map", "0:a:0", "-vn", "-af", f"aresample={sample_rate},atrim={trim}"]
    args += ["-c:a", "pcm_f32le", "-f", "f32le", "pipe:1"]
    with tempfile.TemporaryFile() as errors:  # a file: a chatty failure cannot fill a pipe and stall
        process = subprocess.Popen(
            args, stdin=None if path else subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors
        )
        feeder = None
        if path is None:
            feeder = threading.Thread(target=_feed, args=(source, process.stdin), daemon=True)
            feeder.start()
        out = process.stdout.read()
        if feeder is not None:
            feeder.join()
        if process.wait() != 0:
            errors.seek(0)
            lines = errors.read().decode(errors="replace").strip().splitlines()
            raise RuntimeError(lines[-1] if lines else f"exit status {process.returncode}")
    wav = torch.frombuffer(bytearray(out), dtype=torch.float32)  # (S * C,) interleaved
    usable = wav.numel() // max(channels, 1) * max(channels, 1)
    return wav[:usable].reshape(-1, max(channels, 1)).mean(dim=1)  # (S,)


def _feed(source: AudioSource, sink: BinaryIO) -> None:
    """Write `source` (bytes or a binary file object) to a subprocess's stdin, then close it."""
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            sink.write(source)
        else:
            source.seek(0)
            while chunk := source.read(1 << 20):
                sink.write(chunk)
    except (BrokenPipeError, ValueError):  # ffmpeg stopped reading: it has what it needs
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.close()


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
    what counts as audio for files whose extension does not (schemas.audio_shards).
    """
    from torchcodec.decoders import AudioDecoder  # torchaudio's own decoder, imported late

    try:
        AudioDecoder(source)
    except Exception as err:  # FFmpeg's errors carry no type: sort them by their words
        return "no audio stream" if "audio stream" in str(err) else "not a format FFmpeg opens"
    return None


def save_audio(path: str | os.PathLike, wav: torch.Tensor, sample_rate: int = 16_000) -> None:
    """Write a (S,) or (1, S) waveform, clipped to [-1, 1]; the format follows the extension."""
    wav = wav.detach().float().cpu().reshape(1, -1).clamp(-1.0, 1.0)
    torchaudio.save(os.fspath(path), wav, sample_rate)


def collate_waveforms(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad (S_i,) waveforms into a batch: returns (B, max S_i) waveforms and (B,) lengths."""
    if not waves:
        raise ValueError("cannot batch an empty list of waveforms")
    lengths = torch.tensor([w.shape[-1] for w in waves], dtype=torch.long)
    batch = torch.zeros(len(waves), int(lengths.max()), dtype=torch.float32)
    for row, wave in zip(batch, waves, strict=True):
        row[: wave.shape[-1]] = wave
    return batch, lengths
