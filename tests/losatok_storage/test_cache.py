"""The shard cache against the loopback S3 server, every request counted.

The cache's filesystem reaches the server through a FaultProxy, which frames each client's
stream as HTTP/1.1 and records every request line (`proxy.requests`); objects are written by a
direct client, so the proxy sees the cache's requests only.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from losatok_storage.cache import FetchedFileError, FileCache
from losatok_storage.filesystem import url_to_fs
from losatok_storage.retry import RetryPolicy
from losatok_storage.testing import FaultProxy

ROOT = Path(__file__).resolve().parents[2]
BLOCK = 1 << 20  # s3fs's block size here: a bigger object would be fetched in concurrent ranges


def blob(n: int, seed: int = 0) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(n))


@pytest.fixture(scope="module")
def proxy(s3_endpoint):
    with FaultProxy("127.0.0.1", int(s3_endpoint.rsplit(":", 1)[1])) as proxy:
        yield proxy


@pytest.fixture
def store(s3_endpoint, s3_bucket, proxy):
    """(filesystem through the counting proxy, direct filesystem, bucket, proxy)."""
    proxy.restore()
    del proxy.requests[:]
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": proxy.url},
        "skip_instance_cache": True,
        "default_block_size": BLOCK,
    }
    fs, _ = url_to_fs(f"s3://{s3_bucket}", options, RetryPolicy(attempts=2, base_delay=0.1))
    direct, _ = url_to_fs(f"s3://{s3_bucket}", {**options, "client_kwargs": {"endpoint_url": s3_endpoint}})
    return fs, direct, s3_bucket, proxy


def requests_for(proxy: FaultProxy, key: str) -> list[str]:
    return [r.split("?")[0] for r in proxy.requests if r.split("?")[0].endswith(f"/{key}")]


def read(cache: FileCache, fs, path: str, size: int | None, **kwargs) -> bytes:
    with cache.open(fs, path, size, **kwargs) as f:
        return f.read()


def entries(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in directory.iterdir() if p.name.endswith(".entry")}


def temps(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if ".tmp-" in p.name]


def test_a_second_read_makes_no_request(store, tmp_path):
    fs, direct, bucket, proxy = store
    data = blob(3 * BLOCK + 123)
    direct.pipe_file(f"{bucket}/shard-0.tar", data)
    cache = FileCache(tmp_path, max_bytes=10 * BLOCK)

    assert read(cache, fs, f"{bucket}/shard-0.tar", len(data)) == data
    # one GET for an object three blocks long (s3fs would split it), and no HEAD: the size was given
    assert requests_for(proxy, "shard-0.tar") == [f"GET /{bucket}/shard-0.tar"]
    assert read(cache, fs, f"{bucket}/shard-0.tar", len(data)) == data
    assert len(requests_for(proxy, "shard-0.tar")) == 1
    assert cache.stats() == {
        "hits": 1,
        "misses": 1,
        "bytes_downloaded": len(data),
        "evictions": 0,
        "streamed": 0,
    }
    # another process's cache object on the same directory finds it too
    assert read(FileCache(tmp_path, 10 * BLOCK), fs, f"{bucket}/shard-0.tar", len(data)) == data
    assert len(requests_for(proxy, "shard-0.tar")) == 1


def test_eviction_keeps_the_total_under_the_limit_and_drops_the_least_recently_used(store, tmp_path):
    fs, direct, bucket, proxy = store
    for name in "abc":
        direct.pipe_file(f"{bucket}/{name}", blob(100_000, ord(name)))
    cache = FileCache(tmp_path, max_bytes=250_000)

    read(cache, fs, f"{bucket}/a", 100_000)
    read(cache, fs, f"{bucket}/b", 100_000)
    read(cache, fs, f"{bucket}/a", 100_000)  # a hit: a is now more recent than b
    read(cache, fs, f"{bucket}/c", 100_000)  # no room for three: b goes
    assert cache.evictions == 1 and sum(entries(tmp_path).values()) <= 250_000
    assert sorted(name.rpartition("-")[2] for name in entries(tmp_path)) == ["a.entry", "c.entry"]

    before = len(proxy.requests)
    assert read(cache, fs, f"{bucket}/a", 100_000) == blob(100_000, ord("a"))
    assert read(cache, fs, f"{bucket}/c", 100_000) == blob(100_000, ord("c"))
    assert len(proxy.requests) == before  # both held
    assert read(cache, fs, f"{bucket}/b", 100_000) == blob(100_000, ord("b"))
    assert len(requests_for(proxy, "b")) == 2  # fetched again
    assert sum(entries(tmp_path).values()) <= 250_000 and len(entries(tmp_path)) == 2
    # nothing but entries and their locks is left behind
    assert all(p.name.endswith((".entry", ".lock")) for p in tmp_path.iterdir())


def test_a_changed_object_is_fetched_again(store, tmp_path):
    fs, direct, bucket, proxy = store
    path = f"{bucket}/shard.tar"
    cache = FileCache(tmp_path, max_bytes=1 << 20)
    direct.pipe_file(path, blob(1000, 1))
    assert read(cache, fs, path, 1000) == blob(1000, 1)

    direct.pipe_file(path, blob(2000, 2))  # rewritten: another size
    assert read(cache, fs, path, 2000) == blob(2000, 2)
    assert requests_for(proxy, "shard.tar") == [f"GET /{bucket}/shard.tar"] * 2
    # a size the object does not have is an error, never an entry
    with pytest.raises(FetchedFileError, match="shard.tar: downloaded 2000 bytes, not the 1500"):
        read(cache, fs, path, 1500)
    assert len(entries(tmp_path)) == 2 and not temps(tmp_path)

    # without a size the store is asked (a HEAD), and its ETag tells a same-size rewrite apart
    assert read(cache, fs, path, None) == blob(2000, 2)
    direct.pipe_file(path, blob(2000, 3))
    del proxy.requests[:]
    assert read(cache, fs, path, None) == blob(2000, 3)
    assert read(cache, fs, path, None) == blob(2000, 3)
    assert requests_for(proxy, "shard.tar") == [
        f"HEAD /{bucket}/shard.tar",
        f"GET /{bucket}/shard.tar",
        f"HEAD /{bucket}/shard.tar",
    ]


def open_in_child(cache: FileCache, fs, path: str, size: int, start_together=None, results=None) -> None:
    """Run in a spawned process: open `path` through `cache` (the cache and the filesystem
    arrive pickled, as in a DataLoader worker) and report (misses, hits, digest, seconds)."""
    if start_together is not None:
        start_together.wait(timeout=30)
    started = time.monotonic()
    with cache.open(fs, path, size) as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if results is not None:
        results.put((cache.misses, cache.hits, digest, time.monotonic() - started))


@pytest.fixture
def spawn(monkeypatch):
    # the children import this module by name: the repository must be on their path
    monkeypatch.syspath_prepend(str(ROOT))
    return multiprocessing.get_context("spawn")


def test_two_processes_download_a_file_once(store, tmp_path, spawn):
    fs, direct, bucket, proxy = store
    data = blob(BLOCK)
    direct.pipe_file(f"{bucket}/shared.tar", data)
    cache = FileCache(tmp_path, max_bytes=4 * BLOCK)
    proxy.delay(0.02)  # a download of ~0.5 s: the two opens overlap
    start, results = spawn.Barrier(2), spawn.Queue()
    children = [
        spawn.Process(
            target=open_in_child, args=(cache, fs, f"{bucket}/shared.tar", len(data), start, results)
        )
        for _ in range(2)
    ]
    for child in children:
        child.start()
    got = sorted(results.get(timeout=30) for _ in children)
    for child in children:
        child.join(timeout=10)
        assert child.exitcode == 0

    assert requests_for(proxy, "shared.tar") == [f"GET /{bucket}/shared.tar"]
    (hit_misses, hits, hit_digest, waited), (misses, no_hits, digest, _) = got
    assert (hit_misses, hits, misses, no_hits) == (0, 1, 1, 0)  # one downloaded, the other waited
    assert hit_digest == digest == hashlib.sha256(data).hexdigest()
    assert waited > 0.1  # it did wait on the other's download
    assert len(entries(tmp_path)) == 1 and not temps(tmp_path)


def test_a_killed_download_leaves_no_entry_and_its_remains_are_cleaned(store, tmp_path, spawn, monkeypatch):
    fs, direct, bucket, proxy = store
    data = blob(BLOCK, 5)
    direct.pipe_file(f"{bucket}/cut.tar", data)
    direct.pipe_file(f"{bucket}/other.tar", b"other")
    cache = FileCache(tmp_path, max_bytes=4 * BLOCK)

    proxy.delay(0.05)  # slow enough to kill it part-way
    child = spawn.Process(target=open_in_child, args=(cache, fs, f"{bucket}/cut.tar", len(data)))
    child.start()
    deadline = time.monotonic() + 20
    while not any((tmp_path / name).stat().st_size > 0 for name in temps(tmp_path)):
        assert time.monotonic() < deadline and child.is_alive()
        time.sleep(0.01)
    child.kill()
    child.join(timeout=10)
    proxy.restore()
    (left,) = temps(tmp_path)
    assert 0 < (tmp_path / left).stat().st_size < len(data) and not entries(tmp_path)

    # any later eviction pass deletes a dead download's remains ...
    assert read(cache, fs, f"{bucket}/other.tar", 5) == b"other"
    assert not temps(tmp_path)
    # ... and the file itself is fetched whole, never from them
    assert read(cache, fs, f"{bucket}/cut.tar", len(data)) == data
    assert requests_for(proxy, "cut.tar") == [f"GET /{bucket}/cut.tar"] * 2

    # an error inside a download (here after a partial write) leaves nothing either
    def fail_part_way(rpath, lpath, **kwargs):
        Path(lpath).write_bytes(b"partial")
        raise RuntimeError("cut")

    with monkeypatch.context() as patched, pytest.raises(RuntimeError, match="cut"):
        patched.setattr(fs.raw, "get_file", fail_part_way)
        read(cache, fs, f"{bucket}/third.tar", 100)
    assert not temps(tmp_path) and len(entries(tmp_path)) == 2

    # an entry a crash of the machine cut short (it is renamed unsynced) is fetched again
    (name,) = [name for name in entries(tmp_path) if name.endswith("cut.tar.entry")]
    os.truncate(tmp_path / name, 1000)
    assert read(cache, fs, f"{bucket}/cut.tar", len(data)) == data
    assert len(requests_for(proxy, "cut.tar")) == 3


def test_verify_false_deletes_and_fetches_once_more(store, tmp_path):
    fs, direct, bucket, proxy = store
    path = f"{bucket}/checked.tar"
    direct.pipe_file(path, blob(5000))
    cache = FileCache(tmp_path, max_bytes=1 << 20)
    seen: list[str] = []

    def false_then_true(local: str) -> bool:
        seen.append(local)
        assert Path(local).read_bytes() == blob(5000)  # it sees the whole download
        return len(seen) > 1

    assert read(cache, fs, path, 5000, verify=false_then_true) == blob(5000)
    assert len(requests_for(proxy, "checked.tar")) == 2 and cache.misses == 2
    assert ".tmp-" in seen[0] and ".tmp-" in seen[1]  # checked before it became an entry

    # a cached entry that passes is a hit; one that fails is fetched again
    assert read(cache, fs, path, 5000, verify=lambda local: True) == blob(5000)
    assert len(requests_for(proxy, "checked.tar")) == 2 and cache.hits == 1
    calls: list[str] = []
    assert read(cache, fs, path, 5000, verify=lambda local: calls.append(local) or len(calls) > 1) == blob(
        5000
    )
    assert calls[0].endswith(".entry") and ".tmp-" in calls[1]
    assert len(requests_for(proxy, "checked.tar")) == 3

    # a file that never passes is an error naming it, and is not cached
    for entry in entries(tmp_path):
        os.unlink(tmp_path / entry)
    with pytest.raises(FetchedFileError, match=f"{path}: fails verification, also downloaded afresh"):
        read(cache, fs, path, 5000, verify=lambda local: False)
    assert len(requests_for(proxy, "checked.tar")) == 5
    assert not entries(tmp_path) and not temps(tmp_path)


def test_a_file_larger_than_the_cache_is_read_from_the_store(store, tmp_path):
    fs, direct, bucket, proxy = store
    data = blob(50_000)
    direct.pipe_file(f"{bucket}/big.tar", data)
    cache = FileCache(tmp_path, max_bytes=10_000)
    for _ in range(2):
        assert read(cache, fs, f"{bucket}/big.tar", len(data)) == data
    assert not entries(tmp_path) and not temps(tmp_path)
    assert cache.streamed == 2 and cache.misses == 0 and cache.bytes_downloaded == 0
    # each read goes to the store (s3fs's file also asks for the ETag first, a HEAD)
    assert requests_for(proxy, "big.tar").count(f"GET /{bucket}/big.tar") == 2
