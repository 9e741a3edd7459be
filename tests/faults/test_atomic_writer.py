"""library/atomic.py, the one writer every file goes through: all or nothing under the final name, the
umask's mode, no writing through a planted link, and the public fault hook the drills use."""

import os

import pytest

from library import atomic


def test_an_error_in_the_block_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "f.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_write(str(path), "w") as f:
            f.write("half of the new")
            raise RuntimeError("producer failed")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["f.json"]


def test_mode_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic.write_bytes(str(tmp_path / "a.bin"), b"x")
    finally:
        os.umask(old)
    assert oct(os.stat(tmp_path / "a.bin").st_mode & 0o777) == oct(0o640)


def test_a_link_planted_at_the_temporary_name_is_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    os.symlink(victim, tmp_path / "out.txt.tmp")
    atomic.write_text(str(tmp_path / "out.txt"), "new")
    assert victim.read_text() == "keep me" and (tmp_path / "out.txt").read_text() == "new"


def test_the_fault_hook_sees_each_write_and_rename(tmp_path):
    seen = []
    atomic.set_fault_hook(lambda event, src, dst: seen.append((event, os.path.basename(src), os.path.basename(dst))))
    try:
        atomic.write_text(str(tmp_path / "s.json"), "{}")
    finally:
        atomic.set_fault_hook(None)
    assert seen == [("written", "s.json.tmp", "s.json"), ("replace", "s.json.tmp", "s.json"),
                    ("replaced", "s.json.tmp", "s.json")]
