"""fpxint/atomic.py: every file or none, never half a file, nothing replaced unasked, no temporary left."""
from __future__ import annotations

import os

import pytest
from conftest import fail_writes_to

from fpxint import atomic


def test_writes_text_and_bytes_and_creates_folders(tmp_path):
    a, b = tmp_path / "new" / "a.json", tmp_path / "new" / "b.bin"
    atomic.write_files([(a, "{}\n"), (str(b), b"\x00\x01")])
    assert a.read_text() == "{}\n" and b.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in a.parent.iterdir()) == ["a.json", "b.bin"]  # no temporaries


def test_refuses_to_replace_without_overwrite_and_writes_nothing(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("first")
    with pytest.raises(FileExistsError, match=r"^.*a\.csv already exists$"):
        atomic.write_files([(b, "new b"), (a, "new a")])
    assert a.read_text() == "first" and not b.exists()  # all or nothing: b was not written either
    atomic.write_files([(b, "new b"), (a, "new a")], overwrite=True)
    assert a.read_text() == "new a" and b.read_text() == "new b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.csv"]


def test_a_file_that_appears_while_writing_is_never_clobbered(tmp_path, monkeypatch):
    a = tmp_path / "a.json"
    real = os.fdopen

    def racing(fd, *args, **kw):  # another process creates the target after the check, before the rename
        a.write_text("theirs")
        return real(fd, *args, **kw)

    monkeypatch.setattr(os, "fdopen", racing)
    with pytest.raises(FileExistsError, match="already exists"):
        atomic.write_files([(a, "ours")])
    monkeypatch.undo()
    assert a.read_text() == "theirs" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failed_write_keeps_the_old_files_and_leaves_no_temporary(tmp_path, monkeypatch):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    atomic.write_files([(a, "old a"), (b, "old b")])
    fail_writes_to(monkeypatch, ".b.txt.")  # the second file's write fails after the first was written
    with pytest.raises(OSError, match="No space"):
        atomic.write_files([(a, "new a"), (b, "new b")], overwrite=True)
    monkeypatch.undo()
    assert a.read_text() == "old a" and b.read_text() == "old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_a_dangling_symlink_counts_as_existing(tmp_path):
    link = tmp_path / "out.json"
    link.symlink_to(tmp_path / "elsewhere.json")
    assert atomic.existing([link, tmp_path / "free.json"]) == [str(link)]
    with pytest.raises(FileExistsError):
        atomic.write_files([(link, "x")])
    assert not (tmp_path / "elsewhere.json").exists()
