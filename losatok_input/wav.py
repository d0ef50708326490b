"""PCM wav files read by seeking: where a RIFF/WAVE file's samples lie (`PcmLayout`), and a
window of them behind a header of its own (`PcmLayout.window`), so FFmpeg reads and resamples
only the bytes of a span wherever it lies in the file (torchcodec 0.11 would decode from the
file's start instead). Integer or float PCM of any width, `WAVE_FORMAT_EXTENSIBLE` included.
Mono 16-bit or float samples already at the output rate need no FFmpeg at all
(`PcmLayout.samples`): opening a decoder costs ~5 ms a file, reading the bytes ~0.1 ms.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

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
# (format tag, bits per sample) -> the samples' dtype, for the formats whose float32 values are
# FFmpeg's own with no decoder: 16-bit integer (x / 32768, exact in float32) and 32-bit float
_AS_FLOAT = {(1, 16): np.dtype("<i2"), (3, 32): np.dtype("<f4")}

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
    tag: int = 1  # 1: integer PCM, 3: float (a WAVE_FORMAT_EXTENSIBLE file's subformat)
    bits: int = 16  # per sample

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
                bits = struct.unpack("<H", fmt[14:16])[0]
                return cls(fmt, position + 8, frames, block_align, rate, channels, tag, bits)
            position += 8 + size + (size & 1)  # chunks are padded to even sizes
        return None

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate

    def samples(
        self, read: RangeReader, start: float | None, end: float | None, out_rate: int
    ) -> np.ndarray | None:
        """[start, end) seconds (None: the edge) as (S,) float32 read straight from the bytes, with
        no decoder, when FFmpeg would only convert them: one channel at `out_rate`, 16-bit
        integer or 32-bit float. The samples are a full decode's at the same indices
        (round(t * rate)). None for any other layout (resampled or mixed by FFmpeg instead)."""
        dtype = _AS_FLOAT.get((self.tag, self.bits))
        if (
            dtype is None
            or self.channels != 1
            or self.sample_rate != out_rate
            or self.block_align != dtype.itemsize
        ):
            return None
        first = round((start or 0.0) * out_rate)
        last = self.frames if end is None else min(self.frames, round(end * out_rate))
        if first >= last:
            return np.zeros(0, np.float32)
        raw = read(self.data_offset + first * dtype.itemsize, self.data_offset + last * dtype.itemsize)
        values = np.frombuffer(raw[: len(raw) // dtype.itemsize * dtype.itemsize], dtype)
        if dtype.kind == "i":
            return values.astype(np.float32) * np.float32(1 / 32768)
        return values.astype(np.float32)  # a copy: writable, and aligned

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
