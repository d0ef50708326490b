"""Long inputs decoded with bounded memory: samples streamed to a local temporary file
(`SpooledWave`), never held whole in memory.

An hour of 16 kHz mono float32 is 230 MB, and the in-memory decode peaks at several times that.
torchcodec 0.11 cannot stream (each range decodes again from the stream's start, and ranges
come out shifted at their edges: bench/spool_decode.py), but the
`ffmpeg` command line can: its output is read ~4 MB at a time, averaged over channels and
appended to the file, so a decode's memory is a few MB whatever the input's length. A 16 kHz mono
PCM wav needs no FFmpeg at all: its bytes are the samples (`PcmLayout.samples`), read in pieces.
A remote object is copied to a local file first (FFmpeg needs to seek in an mp4 whose index is
at its end), range by range with the storage retry policy, and the copy is deleted after.

A process killed outright (SIGKILL, the OOM killer) cannot delete its files. Their names carry
the host and the process id, and the first spool or copy a process makes deletes those of
this host's processes that no longer run (`sweep_orphans`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import weakref
from typing import Any

import fsspec
import numpy as np
import psutil

from losatok_input.decoder import AudioError, MonoDecoder
from losatok_input.wav import PcmLayout, range_reader
from losatok_storage.retry import Retries, with_retries

# Output read from FFmpeg per piece, all channels interleaved: 1 M samples of mono float32. Large
# enough that a piece's Python overhead is nothing against its decode, small enough to be memory
# that does not count: a piece, its channel mean and a pipe buffer stay under ~10 MB.
READ_BYTES = 4 << 20
# A remote object is copied in ranges of this size, each one request retried on its own, so an
# outage part-way costs one range again, not the whole object.
COPY_BYTES = 16 << 20
_FLOAT = np.dtype(np.float32)


def _temporary(kind: str, suffix: str, directory: str | None = None) -> tuple[int, str]:
    """(descriptor, path) of a new temporary file named for this host and process; the first
    call of a process sweeps the files its host's dead processes left (`sweep_orphans`)."""
    global _swept
    if not _swept:
        _swept = True
        sweep_orphans(directory)
    prefix = f"losatok-{kind}-{socket.gethostname()}-{os.getpid()}-"
    return tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)


_swept = False  # this process swept its temporary directory once


def sweep_orphans(directory: str | None = None) -> list[str]:
    """Delete the spools and copies in `directory` (None: TMPDIR) that processes of this host
    left when they were killed: the process their name holds no longer runs. Returns their paths.

    A host's name keeps hosts (and containers) that share a directory from judging each
    other's process ids. An open spool deleted by mistake would still read: it is read through
    its descriptor.
    """
    directory = directory or tempfile.gettempdir()
    owned = re.compile(rf"losatok-(?:spool|copy)-{re.escape(socket.gethostname())}-(\d+)-")
    removed = []
    with os.scandir(directory) as entries:
        for entry in entries:
            found = owned.match(entry.name)
            if found and not psutil.pid_exists(int(found.group(1))):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(entry.path)
    return removed


def _remove(fd: int, path: str, owner: int) -> None:
    """Close the spool's descriptor and delete its file (either may be gone already); in a
    process forked from the `owner` process, only the descriptor: the file is the parent's."""
    with contextlib.suppress(OSError):
        os.close(fd)
    if os.getpid() == owner:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


class SpooledWave:
    """An input's decoded (S,) mono float32 samples at `sample_rate` Hz, in a local temporary file.

    Reads like a 1-D numpy array that is only ever sliced: `len`, `shape`, `ndim`, `dtype`, and
    `wave[a:b]`, a new (b - a,) float32 array read from the file (os.preadv into a fresh array:
    a memory map's pages would count in the process's resident memory). Negative and None bounds
    and bounds past the end behave as numpy's; a step other than 1 is a TypeError.

    `close()` (or leaving a `with` block) deletes the file; a wave that is dropped without it is
    deleted when it is collected, or at the interpreter's exit. It does not pickle: the file is
    this process's, and a copy elsewhere would outlive or lose it.
    """

    ndim = 1
    dtype = _FLOAT

    def __init__(self, sample_rate: int, directory: str | None = None) -> None:
        """An empty spool in `directory` (None: TMPDIR, via `tempfile`); filled by `spool_file`."""
        self.sample_rate = sample_rate
        fd, self.path = _temporary("spool", ".f32", directory)
        self._fd = fd
        self._finalizer = weakref.finalize(self, _remove, fd, self.path, os.getpid())
        self._length = 0  # samples written

    def _append(self, samples: np.ndarray) -> None:
        """Write (n,) float32 samples after those already in the file."""
        view = memoryview(np.ascontiguousarray(samples, _FLOAT)).cast("B")
        while view:  # a regular file takes it all at once but for a full disk or a signal
            view = view[os.write(self._fd, view) :]
        self._length += len(samples)

    @property
    def shape(self) -> tuple[int]:
        return (self._length,)

    def __len__(self) -> int:
        return self._length

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def __getitem__(self, index: slice) -> np.ndarray:
        """(n,) float32 samples [start, stop) read from the file, bounds as numpy takes them."""
        if not isinstance(index, slice):
            raise TypeError(f"a SpooledWave is read by slices only, got {type(index).__name__}")
        if index.step not in (None, 1):
            raise TypeError(f"a SpooledWave is read by slices of step 1, got step {index.step}")
        if self.closed:
            raise ValueError(f"the SpooledWave at {self.path} is closed")
        start, stop, _ = index.indices(self._length)
        out = np.empty(max(0, stop - start), _FLOAT)  # (n,)
        view, offset = memoryview(out).cast("B"), start * _FLOAT.itemsize
        while view:
            got = os.preadv(self._fd, [view], offset)
            if got == 0:
                raise OSError(f"{self.path}: the spool ends {len(view)} bytes early")
            view, offset = view[got:], offset + got
        return out

    def close(self) -> None:
        """Delete the file; later reads raise. Closing again does nothing."""
        self._finalizer()

    def __enter__(self) -> SpooledWave:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> Any:
        raise TypeError(f"a SpooledWave does not pickle (its samples are in this process's {self.path})")

    def __repr__(self) -> str:
        state = "closed" if self.closed else self.path
        return f"SpooledWave({self._length} samples at {self.sample_rate} Hz, {state})"


def spool_file(
    path: str, sample_rate: int, name: str | None = None, decoder: MonoDecoder | None = None
) -> SpooledWave:
    """The whole of the local audio file at `path` as a SpooledWave: (S,) float32 at `sample_rate`.

    The samples are `MonoDecoder(path, sample_rate).span()`'s (the channel mean): bit for bit
    for a PCM wav that is mono at `sample_rate` (its bytes, read in pieces) and for mono and
    stereo sources through the `ffmpeg` command line (the same swresample downmix and filter),
    within float32 rounding (~1e-7) for more channels (resampled each, averaged here). `decoder` is an open of the same file
    (its header already read); None opens one. `name` is how errors name the input.
    Raises AudioError naming it: missing, empty or not audio, NaN/Inf samples, no samples, or
    ffmpeg failing.
    """
    label = name or path
    decoder = decoder or MonoDecoder(path, sample_rate, name=label)
    wave = SpooledWave(sample_rate)
    try:
        if decoder.pcm is not None and _reads_directly(decoder.pcm, sample_rate):
            _spool_pcm(wave, path, decoder.pcm, label)
        else:
            _spool_ffmpeg(wave, path, decoder.source_channels, decoder.gain, label)
        if not len(wave):
            raise AudioError(label, "no audio samples (empty or zero-length stream)")
    except BaseException:
        wave.close()
        raise
    return wave


def spool_remote(
    location: str,
    sample_rate: int,
    storage_options: dict[str, Any],
    retries: Retries,
    size: int | None = None,
) -> SpooledWave:
    """The whole of the remote object at `location` as a SpooledWave, by way of a local copy
    (`copy_to_local`, deleted after). `size`: the object's bytes when known (else asked for).
    Raises AudioError for bad audio; a storage error (TransientStorageError past `retries`)."""
    copy = copy_to_local(location, storage_options, retries, size)
    try:
        return spool_file(copy, sample_rate, name=location)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(copy)


def spool_bytes(data: bytes, sample_rate: int, name: str) -> SpooledWave:
    """Audio held as bytes (an object read whole) as a SpooledWave, by way of a temporary file.
    Raises AudioError naming `name`."""
    fd, copy = _temporary("copy", _suffix(name))
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        return spool_file(copy, sample_rate, name=name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(copy)


def copy_to_local(
    location: str, storage_options: dict[str, Any], retries: Retries, size: int | None = None
) -> str:
    """Copy the remote object at `location` to a local temporary file; returns its path (the
    caller deletes it). Ranges of COPY_BYTES, each one request retried on transient errors.

    The file keeps the object's extension, which FFmpeg's probe weighs for headerless streams
    (raw AAC or MP3). Raises what the storage raised (TransientStorageError past `retries`).
    """
    fs, path = fsspec.core.url_to_fs(location, **storage_options)
    if not size:
        size, _ = with_retries(lambda: fs.size(path), retries)
    fd, copy = _temporary("copy", _suffix(location))
    try:
        with os.fdopen(fd, "wb") as out:
            for offset in range(0, size, COPY_BYTES):
                end = min(size, offset + COPY_BYTES)
                piece, _ = with_retries(lambda a=offset, b=end: fs.cat_file(path, start=a, end=b), retries)
                if len(piece) != end - offset:  # the object changed or was cut since it was sized
                    raise OSError(f"{location}: read {len(piece)} bytes at {offset}, expected {end - offset}")
                out.write(piece)
    except BaseException:
        os.unlink(copy)
        raise
    return copy


def _suffix(location: str) -> str:
    name = location.rsplit("#", 1)[0].rsplit("/", 1)[-1]
    suffix = os.path.splitext(name)[1]
    return suffix if suffix[1:].isalnum() and len(suffix) <= 8 else ""


def _reads_directly(layout: PcmLayout, sample_rate: int) -> bool:
    """Whether `layout.samples` reads this wav's samples from its bytes (mono, 16-bit or float32,
    at `sample_rate`): it answers None otherwise, and reads nothing for an empty span."""
    return layout.samples(lambda start, end: b"", 0.0, 0.0, sample_rate) is not None


def _check_finite(samples: np.ndarray, first: int, sample_rate: int, label: str) -> None:
    """Refuse NaN/Inf in (n,) samples that start at sample `first` of the input."""
    # a sum is NaN/Inf when any sample is, and costs one pass without a mask; only then count
    if not np.isfinite(samples.sum()):
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        if bad:
            at, seconds = first / sample_rate, len(samples) / sample_rate
            raise AudioError(
                label, f"{bad} samples are NaN or infinite (in the {seconds:.1f} s from {at:.1f} s)"
            )


def _spool_pcm(wave: SpooledWave, path: str, layout: PcmLayout, label: str) -> None:
    """Append a mono wav's samples at the output rate, from its bytes in pieces of 1 M samples;
    the same conversion as the in-memory path (`PcmLayout.samples`), so bit for bit its values."""
    rate, step = wave.sample_rate, READ_BYTES // _FLOAT.itemsize
    with open(path, "rb") as handle:
        read = range_reader(handle)
        for first in range(0, layout.frames, step):
            last = min(layout.frames, first + step)
            # first / rate * rate rounds back to first exactly: these sample counts are far below 2**52
            samples = layout.samples(read, first / rate, last / rate, rate)
            _check_finite(samples, first, rate, label)
            wave._append(samples)


def _spool_ffmpeg(wave: SpooledWave, path: str, channels: int, gain: float, label: str) -> None:
    """Append the first audio stream of the file at `path`, decoded and resampled to the wave's
    rate by the `ffmpeg` command line, as the channel mean, READ_BYTES of output at a time.

    One or two channels: swresample downmixes to one before resampling, as torchcodec's decoder
    does, and `gain` (MonoDecoder's) scales that to the mean: the same samples bit for bit, and
    less work than resampling both channels (a 10-minute 48 kHz stereo FLAC: 0.99 s against
    1.19 s, bench/spool_decode.py). More: every channel is resampled (interleaved float32) and
    averaged here, as MonoDecoder averages them.
    """
    executable = shutil.which("ffmpeg")
    if executable is None:
        raise AudioError(label, "the ffmpeg command line is needed for long inputs and is not on the PATH")
    channels = max(channels, 1)
    args = [executable, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", path, "-map", "0:a:0", "-vn"]
    if channels <= 2:
        args += ["-ac", "1", "-ar", str(wave.sample_rate)]
        channels = 1
    else:
        args += ["-af", f"aresample={wave.sample_rate}"]
    args += ["-c:a", "pcm_f32le", "-f", "f32le", "pipe:1"]
    frame = channels * _FLOAT.itemsize  # bytes per output frame, all channels
    buffer = bytearray(READ_BYTES // frame * frame)  # whole frames: a piece never splits one
    with tempfile.TemporaryFile() as errors:  # a file: a chatty failure cannot fill a pipe and stall
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors)
        try:
            while filled := _fill(process.stdout, buffer):
                interleaved = np.frombuffer(buffer, _FLOAT, count=filled // frame * channels)  # (n * C,)
                mono = _channel_mean(interleaved, channels)  # (n,)
                if gain != 1.0:
                    mono *= np.float32(gain)  # in float32, as MonoDecoder scales its tensor
                _check_finite(mono, len(wave), wave.sample_rate, label)
                wave._append(mono)  # written before the buffer is filled again
                if filled < len(buffer):
                    break
        finally:
            if process.poll() is None:  # stopped early (an error here): FFmpeg need not finish
                process.kill()
            process.stdout.close()
            status = process.wait()
        if status != 0:
            errors.seek(0)
            lines = errors.read().decode(errors="replace").strip().splitlines()
            reason = lines[-1] if lines else f"exit status {status}"
            raise AudioError(label, f"the ffmpeg command line failed: {reason}")


def _channel_mean(interleaved: np.ndarray, channels: int) -> np.ndarray:
    """(n * C,) interleaved frames -> (n,) their channel mean, a new array.

    MonoDecoder's mean (swresample's downmix scaled to the mean for one or two channels, torch's
    mean for more) to float32 rounding. Summed channel by channel over strided views: numpy's
    mean over a short last axis is ~15 times slower, as long as the decode itself for stereo.
    """
    mono = interleaved[0::channels].copy()  # (n,)
    for channel in range(1, channels):
        mono += interleaved[channel::channels]
    if channels > 1:
        mono /= np.float32(channels)
    return mono


def _fill(stream: Any, buffer: bytearray) -> int:
    """Read from `stream` into `buffer` until it is full or the stream ends; bytes read."""
    view, filled = memoryview(buffer), 0
    while filled < len(buffer):
        got = stream.readinto(view[filled:])
        if not got:
            break
        filled += got
    return filled
