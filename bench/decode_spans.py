"""Spans: many utterance spans over one long recording, locally and over S3.

    python bench/decode_spans.py [--minutes 30] [--span-seconds 5]

Makes one recording of `--minutes` (sox music, 44.1 kHz stereo, mp3) and a manifest of
spans covering it (`--span-seconds` each; 360 for 30 minutes), then measures in one run:
  local   the decode stage on the whole file as one input, against the same stage on all the
          spans as inputs of one unit (one open, one pass); on the units the plan makes of them
          at `--per-shard` inputs a shard (`make_units`), against units cut every `--per-shard`
          inputs (each unit reads the file from its start); and a full `torchaudio.load` +
          resample per span, timed on 3 spans and scaled
          to all of them
  S3      the same spans read from a loopback S3 server (moto) through the decode stage; the
          bytes sent in GET responses are counted at the server, against the bytes of the
          spans (file size x covered fraction) and against reading the whole object per span
          (one download per span); then a sparse manifest (10 spans in the first 10 % of the
          file) for what range reads save when spans do not cover the file
  PCM wav a 16 kHz mono wav of the same length (the usual speech corpus layout) with 10 spans
          spread over the whole file, read by seeking to their bytes (`losatok_input.wav.PcmLayout`)
          against the one pass from the first span to the last that compressed formats take
          (the same code with the seek switched off): wall time locally, and GET bytes over S3
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torchaudio  # noqa: E402

from losatok_input import decoder as audio  # noqa: E402
from losatok_input.sources import InputItem, input_key  # noqa: E402
from losatok_input.testing import convert, synth_music  # noqa: E402
from pipelines.config import SegmentConfig  # noqa: E402
from pipelines.decode import decode_items  # noqa: E402
from pipelines.plan import make_units  # noqa: E402

SEGMENT = SegmentConfig(max_seconds=30.0)


def before(path: str, start: float, end: float) -> torch.Tensor:
    """A span the plain way: the whole file decoded, then sliced."""
    wav, rate = torchaudio.load(path)
    wav = wav[:, round(start * rate) : round(end * rate)]
    return torchaudio.functional.resample(wav.mean(0), rate, 16_000)


def span_items(location: str, spans: list[tuple[float, float]]) -> list[InputItem]:
    return [InputItem(input_key(location, a, b), location, a, b) for a, b in spans]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class ByteCountingS3:
    """moto's S3 app behind a WSGI middleware that counts the body bytes of GET responses."""

    def __init__(self) -> None:
        from moto.server import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        app = DomainDispatcherApplication(create_backend_app)
        self.get_bytes = 0
        self.get_requests = 0

        def counting(environ, start_response):
            body = app(environ, start_response)
            if environ["REQUEST_METHOD"] == "GET":
                self.get_requests += 1
                for chunk in body:
                    self.get_bytes += len(chunk)
                    yield chunk
            else:
                yield from body

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.server = make_server("127.0.0.1", port, counting, threaded=True)
        self.endpoint = f"http://127.0.0.1:{port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        self.get_bytes = self.get_requests = 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--span-seconds", type=float, default=5.0)
    p.add_argument("--per-shard", type=int, default=256, help="sink.inputs_per_shard of the plan")
    args = p.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="losatok-spans-"))
    seconds = args.minutes * 60
    music = synth_music(work / "long.wav", seconds=seconds, sample_rate=44_100, channels=2)
    path = str(convert(music, work / "long.mp3"))
    music.unlink()
    n = int(seconds // args.span_seconds)
    spans = [(i * args.span_seconds, (i + 1) * args.span_seconds) for i in range(n)]
    print(
        f"{args.minutes:g}-minute mp3 (44.1 kHz stereo, {os.path.getsize(path) / 2**20:.1f} MiB), {n} spans"
    )

    whole = [InputItem(input_key(path), path)]
    decode_items(whole, SEGMENT, 16_000, {}, 1)  # warm-up
    once = min(timed(lambda: decode_items(whole, SEGMENT, 16_000, {}, 1)) for _ in range(2))
    items = span_items(path, spans)
    segments, failures = [], []
    all_spans = timed(lambda: segments.extend(decode_items(items, SEGMENT, 16_000, {}, 1)[0]))
    assert len(segments) == n, (len(segments), failures)
    planned = [list(unit.items) for unit in make_units(items, args.per_shard, 1 << 40)]
    cut = [items[i : i + args.per_shard] for i in range(0, n, args.per_shard)]
    as_planned = timed(lambda: [decode_items(unit, SEGMENT, 16_000, {}, 1) for unit in planned])
    as_cut = timed(lambda: [decode_items(unit, SEGMENT, 16_000, {}, 1) for unit in cut])
    per_span_before = timed(lambda: [before(path, a, b) for a, b in spans[:3]]) / 3
    print("| measurement | wall s | / decoding the file once |")
    print("| --- | --- | --- |")
    print(f"| the file once (decode stage) | {once:.2f} | 1.00 |")
    print(f"| all {n} spans (decode stage, one open) | {all_spans:.2f} | {all_spans / once:.2f} |")
    print(
        f"| all {n} spans in the plan's {len(planned)} unit(s) | {as_planned:.2f} | {as_planned / once:.2f} |"
    )
    print(
        f"| all {n} spans cut every {args.per_shard} ({len(cut)} units) | {as_cut:.2f} | {as_cut / once:.2f} |"
    )
    print(
        f"| all {n} spans, a full decode each (3 timed, x{n / 3:.0f}) | {per_span_before * n:.0f} | {per_span_before * n / once:.0f} |"
    )

    import s3fs

    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    server = ByteCountingS3()
    options = {"client_kwargs": {"endpoint_url": server.endpoint}}
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    fs.mkdir("bench")
    fs.put(path, "bench/long.mp3")
    url = "s3://bench/long.mp3"
    size = os.path.getsize(path)
    sparse = [(i * seconds / 100, i * seconds / 100 + args.span_seconds) for i in range(10)]
    print(
        "| S3 manifest | spans' bytes | GET bytes at the server | GET requests | fetched / spans' bytes | whole object per span |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name, manifest in ((f"{n} spans covering the file", spans), ("10 spans in the first 10 %", sparse)):
        server.reset()
        got, failures = decode_items(span_items(url, manifest), SEGMENT, 16_000, options, 1)
        assert not failures and len(got) == len(manifest), failures
        span_bytes = size * sum(b - a for a, b in manifest) / seconds
        print(
            f"| {name} | {span_bytes / 2**20:.1f} MiB | {server.get_bytes / 2**20:.1f} MiB | {server.get_requests} "
            f"| {server.get_bytes / span_bytes:.2f} | {len(manifest) * size / span_bytes:.0f}x |"
        )
    pcm_spans(work, seconds, args.span_seconds, server, fs, options)
    server.server.shutdown()


def pcm_spans(work: Path, seconds: float, span_seconds: float, server, fs, options: dict) -> None:
    """Sparse spans of a long 16 kHz mono wav: by seeking, against one pass to the last span."""
    path = str(
        convert(
            synth_music(work / "long16.wav", seconds=seconds, sample_rate=16_000, channels=1), work / "w.wav"
        )
    )
    fs.put(path, "bench/long16.wav")
    url, size = "s3://bench/long16.wav", os.path.getsize(path)
    sparse = [(i * seconds / 10 + 3.0, i * seconds / 10 + 3.0 + span_seconds) for i in range(10)]
    span_bytes = size * sum(b - a for a, b in sparse) / seconds
    whole = [InputItem(input_key(path), path)]
    once = min(timed(lambda: decode_items(whole, SEGMENT, 16_000, {}, 1)) for _ in range(2))
    layout = audio.MonoDecoder._pcm_layout
    rows = []
    for name, seek in (("by seeking", True), ("one pass to the last span", False)):
        audio.MonoDecoder._pcm_layout = layout if seek else (lambda self: None)
        try:
            local = min(
                timed(lambda: decode_items(span_items(path, sparse), SEGMENT, 16_000, {}, 1))
                for _ in range(2)
            )
            server.reset()
            got, failures = decode_items(span_items(url, sparse), SEGMENT, 16_000, options, 1)
            assert not failures and len(got) == len(sparse), failures
            rows.append((name, local, server.get_bytes, server.get_requests))
        finally:
            audio.MonoDecoder._pcm_layout = layout
    print(
        f"| 16 kHz mono wav, {seconds / 60:g} min ({size / 2**20:.1f} MiB), 10 spans of {span_seconds:g} s spread "
        f"over it | local wall s | / the file once ({once:.2f} s) | GET bytes | GET requests | fetched / spans' bytes ({span_bytes / 2**20:.2f} MiB) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name, local, got, requests in rows:
        print(
            f"| {name} | {local:.3f} | {local / once:.3f} | {got / 2**20:.2f} MiB | {requests} | {got / span_bytes:.2f} |"
        )


if __name__ == "__main__":
    main()
