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


# -- who holds it (vol_plugin status, the timeout message) ---------------------------------

# /proc/locks captured on this machine with one holder and three waiters on one file.
PROC_LOCKS = """\
1: FLOCK  ADVISORY  WRITE 29750 fe:00:2146389 0 EOF
1: -> FLOCK  ADVISORY  WRITE 2886 fe:00:2146389 0 EOF
1:  -> FLOCK  ADVISORY  WRITE 3216 fe:00:2146389 0 EOF
2: POSIX  ADVISORY  WRITE 777 fe:00:2146389 0 EOF
3: FLOCK  ADVISORY  WRITE 4444 fe:00:99 0 EOF
"""


def test_proc_locks_names_the_holder_and_the_waiters_of_that_file_only():
    assert slabvol.lock.parse_proc_locks(PROC_LOCKS, os.makedev(0xfe, 0), 2146389) == \
        (29750, [2886, 3216])
    assert slabvol.lock.parse_proc_locks(PROC_LOCKS, os.makedev(0xfe, 0), 1) == (None, [])


def test_status_and_the_timeout_name_the_process_that_holds_the_lock(lockdir):
    path = str(lockdir / "slabvol.lock")
    with NodeLock(path):
        pass  # create it
    ready_r, ready_w = os.pipe()
    release_r, release_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            fd = os.open(path, os.O_RDWR)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(ready_w, b"x")
            os.read(release_r, 1)
        finally:
            os._exit(0)
    try:
        assert os.read(ready_r, 1) == b"x"
        state = slabvol.lock.lock_state(path)
        assert state["holder"]["pid"] == pid and state["waiting"] == []
        with open("/proc/self/cmdline", "rb") as handle:  # a fork: the same command line
            ours = " ".join(part.decode() for part in handle.read().split(b"\0") if part)
        assert state["holder"]["running_s"] >= 0 and state["holder"]["command"] == ours
        with pytest.raises(Busy, match=f"held by pid {pid} "):
            with NodeLock(path, timeout=0.1):
                pass
    finally:
        os.write(release_w, b"x")
        os.waitpid(pid, 0)
    assert slabvol.lock.lock_state(path) == {"holder": None, "waiting": []}
    assert slabvol.lock.format_lock_state({"holder": None, "waiting": []}) == "free"


def test_lock_state_of_a_missing_lock_file_is_none(lockdir):
    assert slabvol.lock.lock_state(str(lockdir / "none")) is None
    assert slabvol.lock.format_lock_state(None) == "free"
