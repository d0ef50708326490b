"""The fault-injecting proxy really cuts, restores and resets S3 traffic on loopback."""

from __future__ import annotations

import pytest
import s3fs

from losatok_storage.retry import RetryPolicy, TransientStorageError, call, is_transient
from losatok_storage.testing import FaultProxy


def s3_through(proxy: FaultProxy) -> s3fs.S3FileSystem:
    # s3fs's own retries off, so the test sees each fault; ours are what is under test
    fs = s3fs.S3FileSystem(
        key="testing",
        secret="testing",
        client_kwargs={"endpoint_url": proxy.url},
        config_kwargs={"retries": {"max_attempts": 1}, "connect_timeout": 2, "read_timeout": 2},
        skip_instance_cache=True,
    )
    fs.retries = 1
    return fs


def test_an_outage_is_transient_and_ridden_out_by_retries(s3_endpoint, s3_bucket, caplog):
    port = int(s3_endpoint.rsplit(":", 1)[1])
    with FaultProxy("127.0.0.1", port) as proxy:
        fs = s3_through(proxy)
        fs.pipe(f"{s3_bucket}/a.bin", b"x" * 1000)
        assert fs.cat(f"{s3_bucket}/a.bin") == b"x" * 1000

        proxy.cut()
        with pytest.raises(Exception) as failed:
            fs.cat(f"{s3_bucket}/a.bin")
        assert is_transient(failed.value), repr(failed.value)
        assert proxy.connections_refused >= 1

        with proxy.outage(1.5):  # back after 1.5 s: retries with backoff get through
            data, attempts = call(
                lambda: fs.cat(f"{s3_bucket}/a.bin"), "read", RetryPolicy(attempts=8, base_delay=0.3)
            )
        assert data == b"x" * 1000 and attempts > 1
        # each retry is logged with what failed, its kind and its count
        assert "read: transient" in caplog.text and "attempt 1 of 8; retrying in" in caplog.text

        proxy.cut()
        with pytest.raises(TransientStorageError):
            call(lambda: fs.cat(f"{s3_bucket}/a.bin"), "read", RetryPolicy(attempts=2, base_delay=0.1))
        proxy.restore()
        assert fs.cat(f"{s3_bucket}/a.bin") == b"x" * 1000


def test_a_reset_mid_transfer_is_transient(s3_endpoint, s3_bucket):
    port = int(s3_endpoint.rsplit(":", 1)[1])
    with FaultProxy("127.0.0.1", port) as proxy:
        fs = s3_through(proxy)
        fs.pipe(f"{s3_bucket}/big.bin", bytes(range(256)) * 4096)  # 1 MiB
        proxy.reset_after(64 * 1024)
        with pytest.raises(Exception) as failed:
            fs.cat(f"{s3_bucket}/big.bin")
        assert is_transient(failed.value), repr(failed.value)
        proxy.restore()
        assert len(fs.cat(f"{s3_bucket}/big.bin")) == 1 << 20


def test_a_shard_read_cut_part_way_reopens_and_goes_on_from_where_it_stopped(
    s3_endpoint, s3_bucket, caplog, monkeypatch
):
    """A reader streaming a shard (the DiT loader's read) meets an outage after 5 samples, over
    a second later: every sample comes once, in order, and the reopening is logged."""
    import threading

    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)  # s3fs's own quick retries off: ours are tested

    from losatok_data.card import read_card
    from losatok_data.layout import DatasetLayout
    from losatok_data.reader import DatasetReader
    from losatok_data.testing import write_fake_dataset

    direct = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_endpoint}}
    url = f"s3://{s3_bucket}/resumed"
    fake = write_fake_dataset(url, n_shards=1, samples_per_shard=40, min_frames=300, max_frames=400,
                              storage_options=direct)  # fmt: skip  # a 1.5 MB shard
    port = int(s3_endpoint.rsplit(":", 1)[1])
    with FaultProxy("127.0.0.1", port) as proxy:
        through = {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": proxy.url},
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2, "read_timeout": 2},
            "default_block_size": 64 * 1024,  # range requests of 64 kB: samples arrive before the cut
            "skip_instance_cache": True,
        }
        layout = DatasetLayout(url, through, RetryPolicy(attempts=40, base_delay=0.05, max_delay=0.1))
        reader = DatasetReader(layout, read_card(layout))
        keys, restore = [], threading.Timer(1.0, proxy.restore)
        try:
            for sample in reader.iter_shard(0):
                keys.append(sample.key)
                if len(keys) == 5:  # part-way through the shard: the store goes away for a second
                    proxy.cut()
                    restore.start()
        finally:
            restore.join()
    assert keys == list(fake.shard_keys[0])  # each sample once, in written order
    assert "5 items read; reopening in" in caplog.text  # cut part-way, resumed past them


def test_requests_are_counted_one_by_one_on_a_kept_alive_connection():
    from losatok_storage.testing import RequestFramer

    seen: list[str] = []
    framer = RequestFramer(seen.append)
    stream = (
        b"PUT /b/k HTTP/1.1\r\nContent-Length: 11\r\n\r\nGET /x HTTP"  # a body that looks like a request
        b"HEAD /b/k HTTP/1.1\r\nHost: s3\r\n\r\n"
        b"PUT /b/c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nGET /\r\n0\r\nx-amz-checksum: y\r\n\r\n"
        b"GET /b/k?x=1 HTTP/1.1\r\n\r\n"
    )
    for i in range(0, len(stream), 7):  # in pieces, as recv hands them over
        framer.feed(stream[i : i + 7])
    assert seen == ["PUT /b/k", "HEAD /b/k", "PUT /b/c", "GET /b/k?x=1"]


def test_a_store_that_stalls_is_abandoned_at_the_deadline_and_the_write_retried(s3_endpoint, s3_bucket):
    """A store that takes a request and never answers (no error, no close) costs each attempt
    the policy's deadline, not forever: the write fails transiently past its attempts, and the
    next one, once the store answers again, lands whole; an upload past the in-memory spool
    (read from a file on disk) lands whole too."""
    import time

    from losatok_storage.filesystem import SPOOL_IN_MEMORY, open_atomic, url_to_fs

    port = int(s3_endpoint.rsplit(":", 1)[1])
    with FaultProxy("127.0.0.1", port) as proxy:
        options = {  # botocore's own read timeout (60 s) left as it is: the deadline is under test
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": proxy.url},
            "config_kwargs": {"retries": {"max_attempts": 1}},
            "skip_instance_cache": True,
        }
        policy = RetryPolicy(attempts=2, base_delay=0.1, stall_seconds=1.0)
        fs, _ = url_to_fs(f"s3://{s3_bucket}", options, policy)
        proxy.delay(30)  # each forwarded chunk held 30 s: the request goes out, no answer comes
        started = time.monotonic()
        with pytest.raises(TransientStorageError), open_atomic(fs, f"{s3_bucket}/stalled.json") as f:
            f.write(b"{}")
        assert time.monotonic() - started < 10, "the stalled write was waited out, not abandoned"
        proxy.restore()
        with open_atomic(fs, f"{s3_bucket}/stalled.json") as f:
            f.write(b'{"ok": true}')
        big = bytes(range(256)) * (SPOOL_IN_MEMORY // 256 + 4096)  # spooled on disk
        with open_atomic(fs, f"{s3_bucket}/big.bin") as f:
            for start in range(0, len(big), 1 << 20):
                f.write(big[start : start + (1 << 20)])
        assert fs.cat_file(f"{s3_bucket}/stalled.json") == b'{"ok": true}'
        assert fs.cat_file(f"{s3_bucket}/big.bin") == big
