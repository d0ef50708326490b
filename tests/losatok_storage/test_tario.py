import io

import pytest

from losatok_storage.filesystem import url_to_fs
from losatok_storage.tario import (
    TarReadError,
    TarSampleWriter,
    check_tar_end,
    iter_tar_samples,
    split_member_name,
)


def make_tar(samples):
    buffer = io.BytesIO()
    writer = TarSampleWriter(buffer)
    for key, members in samples:
        writer.write(key, members)
    writer.close()
    return buffer.getvalue()


def test_members_group_by_key_in_order():
    data = make_tar([("a", {"x.npy": b"1", "json": b"{}"}), ("b", {"x.npy": b"22"})])
    assert list(iter_tar_samples(io.BytesIO(data))) == [
        {"__key__": "a", "x.npy": b"1", "json": b"{}"},
        {"__key__": "b", "x.npy": b"22"},
    ]


def test_split_member_name_at_first_dot():
    assert split_member_name("utt-1.semantic_low.npy") == ("utt-1", "semantic_low.npy")
    with pytest.raises(TarReadError):
        split_member_name("no_extension")


def test_truncated_inside_a_member_raises():
    data = make_tar([("a", {"x.npy": b"1" * 2000}), ("b", {"x.npy": b"2" * 2000})])
    with pytest.raises(TarReadError, match="t.tar"):
        list(iter_tar_samples(io.BytesIO(data[:1700]), name="t.tar"))


def test_key_split_across_the_tar_raises():
    data = make_tar([("a", {"x.npy": b"1"}), ("b", {"x.npy": b"2"}), ("a", {"y.npy": b"3"})])
    with pytest.raises(TarReadError, match="'a' appears again"):
        list(iter_tar_samples(io.BytesIO(data)))


def test_end_marker_check_catches_a_cut_at_a_member_boundary(tmp_path):
    data = make_tar([("a", {"x.npy": b"1" * 512}), ("b", {"x.npy": b"2" * 512})])
    fs, _ = url_to_fs(str(tmp_path))
    whole, cut = tmp_path / "whole.tar", tmp_path / "cut.tar"
    whole.write_bytes(data)
    cut.write_bytes(data[:2048])  # header+data of "a", header+data of "b": a valid-looking prefix
    assert len(list(iter_tar_samples(io.BytesIO(data[:2048])))) == 2  # tarfile alone cannot tell
    assert check_tar_end(fs, str(whole)) is None
    assert "end-of-archive" in check_tar_end(fs, str(cut))
    (tmp_path / "odd.tar").write_bytes(data[:2000])
    assert "blocks" in check_tar_end(fs, str(tmp_path / "odd.tar"))
