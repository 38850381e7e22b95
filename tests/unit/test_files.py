"""files.replace_file: the one atomic write (metrics file, NFD feature file)."""

import os
import stat

import pytest

from slabvol.files import read_text, replace_file


def test_replaces_the_file_with_mode_0644_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "slabvol.prom"
    path.write_text("old\n")
    os.umask(0o077)
    try:
        replace_file(str(path), "new\n")
    finally:
        os.umask(0o022)
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["slabvol.prom"]


def test_never_leaves_a_half_written_file(tmp_path, monkeypatch):
    path = tmp_path / "slabvol.prom"
    path.write_text("old\n")

    def fail(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        replace_file(str(path), "new\n")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["slabvol.prom"]


def test_the_temp_file_is_a_dot_file_in_the_same_dir(tmp_path, monkeypatch):
    seen = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (seen.append(src), real(src, dst)))
    replace_file(str(tmp_path / "slabvol"), "x=1\n")
    assert os.path.dirname(seen[0]) == str(tmp_path)
    assert os.path.basename(seen[0]).startswith(".")  # NFD and node-exporter skip dot-files


def test_a_symlink_planted_at_the_temp_name_is_not_followed(tmp_path):
    target = tmp_path / "target"
    target.write_text("precious\n")
    os.symlink(target, tmp_path / f".slabvol.{os.getpid()}.tmp")
    replace_file(str(tmp_path / "slabvol"), "x=1\n")
    assert target.read_text() == "precious\n"
    assert (tmp_path / "slabvol").read_text() == "x=1\n"


def test_a_missing_dir_raises_and_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        replace_file(str(tmp_path / "no" / "slabvol"), "x=1\n")
    assert os.listdir(tmp_path) == []


def test_read_text(tmp_path):
    assert read_text(str(tmp_path / "none")) is None
    (tmp_path / "f").write_text("a\n")
    assert read_text(str(tmp_path / "f")) == "a\n"


def test_a_failed_check_keeps_the_old_file_and_sees_the_complete_new_one(tmp_path):
    path = tmp_path / "vol_plugin"
    path.write_text("old\n")
    seen = []

    def check(tmp):
        seen.append((open(tmp).read(), os.stat(tmp).st_mode & 0o777))
        raise RuntimeError("does not answer init")
    with pytest.raises(RuntimeError):
        replace_file(str(path), "new\n", 0o755, durable=True, check=check)
    assert seen == [("new\n", 0o755)]
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["vol_plugin"]


def test_durable_replaces_like_the_rest(tmp_path):
    replace_file(str(tmp_path / "f"), "x\n", 0o600, durable=True)
    assert (tmp_path / "f").read_text() == "x\n"
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o600
