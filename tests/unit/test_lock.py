"""The node lock: nobody but the driver's user can hold it, block it or split it.
(Real files in tmp_path: pyfakefs does not emulate flock.)"""

import fcntl
import os

import pytest

import slabvol.lock
from slabvol.errors import Busy, ConfigError
from slabvol.lock import NodeLock


@pytest.fixture
def lockdir(tmp_path):
    path = tmp_path / "slabvol"
    path.mkdir(mode=0o700)
    return path


def test_the_lock_is_taken_and_released(lockdir):
    path = str(lockdir / "slabvol.lock")
    with NodeLock(path) as lock:
        fd = os.open(path, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert lock.fd is not None
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released
    os.close(fd)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_a_missing_dir_is_created_root_only(tmp_path):
    path = tmp_path / "run" / "slabvol" / "slabvol.lock"
    with NodeLock(str(path)):
        pass
    assert oct(os.stat(path.parent).st_mode & 0o777) == "0o700"


@pytest.mark.parametrize("mode", [0o1777, 0o777, 0o775, 0o757])
def test_a_lock_in_a_dir_others_can_write_is_refused(tmp_path, mode):
    """/run/lock is 1777: any local user could create the file first and hold it."""
    shared = tmp_path / "lock"
    shared.mkdir()
    shared.chmod(mode)
    with pytest.raises(ConfigError, match=r"its directory .* is writable by other users "
                                          r".*a directory only root can write"):
        with NodeLock(str(shared / "slabvol.lock")):
            pass
    assert not (shared / "slabvol.lock").exists()


def test_a_symlinked_lock_file_is_refused_and_not_followed(lockdir, tmp_path):
    target = tmp_path / "elsewhere"
    os.symlink(target, lockdir / "slabvol.lock")
    with pytest.raises(ConfigError, match="cannot be opened without following a symlink"):
        with NodeLock(str(lockdir / "slabvol.lock")):
            pass
    assert not target.exists()


def test_a_symlinked_lock_dir_is_refused(lockdir, tmp_path):
    os.symlink(lockdir, tmp_path / "link")
    with pytest.raises(ConfigError, match="is not a directory"):
        with NodeLock(str(tmp_path / "link" / "slabvol.lock")):
            pass


def test_a_lock_file_owned_by_another_user_is_refused(lockdir, monkeypatch):
    (lockdir / "slabvol.lock").write_text("")
    owner = os.stat(lockdir / "slabvol.lock").st_uid
    # (no root needed: the driver "runs as" another uid, and its dir check is passed)
    monkeypatch.setattr(slabvol.lock.os, "geteuid", lambda: owner + 1)
    monkeypatch.setattr(NodeLock, "_check_dir", lambda self: None)
    with pytest.raises(ConfigError, match=f"is owned by uid {owner}, not by the driver's "
                                          f"uid {owner + 1}"):
        with NodeLock(str(lockdir / "slabvol.lock")):
            pass


def test_a_lock_dir_owned_by_another_user_is_refused(lockdir, monkeypatch):
    owner = os.stat(lockdir).st_uid
    monkeypatch.setattr(slabvol.lock.os, "geteuid", lambda: owner + 1)
    with pytest.raises(ConfigError, match=f"its directory .* is owned by uid {owner}"):
        with NodeLock(str(lockdir / "slabvol.lock")):
            pass


def test_a_lock_file_others_can_write_is_refused(lockdir):
    (lockdir / "slabvol.lock").write_text("")
    (lockdir / "slabvol.lock").chmod(0o666)
    with pytest.raises(ConfigError, match="is writable by other users"):
        with NodeLock(str(lockdir / "slabvol.lock")):
            pass


def test_a_lock_file_replaced_while_waiting_is_not_trusted(lockdir, monkeypatch):
    """Unlink-and-recreate between open and flock would give two drivers two different
    locks; the lock must end up held on the file that is at the path."""
    path = str(lockdir / "slabvol.lock")
    real_flock = fcntl.flock
    swapped = []

    def flock(fd, op):
        if not swapped:
            swapped.append(os.fstat(fd).st_ino)
            os.unlink(path)
            with open(path, "w"):
                pass
            os.chmod(path, 0o600)
        return real_flock(fd, op)
    monkeypatch.setattr(slabvol.lock.fcntl, "flock", flock)
    with NodeLock(path) as lock:
        held = os.fstat(lock.fd)
        assert held.st_ino == os.stat(path).st_ino != swapped[0]


def test_a_held_lock_times_out_as_busy(lockdir):
    path = str(lockdir / "slabvol.lock")
    with NodeLock(path):
        with pytest.raises(Busy, match="another slabvol operation has held"):
            with NodeLock(path, timeout=0.1):
                pass
