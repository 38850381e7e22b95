"""One node-wide lock around every operation that reads and changes slabs.

Anyone who can create or open the lock file can hold it and stop every mount on the node,
and anyone who can replace it can let two drivers run at once. So the lock file lives in
a directory only the driver's user (root) can write, is opened without following a
symlink, must be a regular file owned by that user and writable by nobody else, and is
checked after locking to still be the file at that path (an unlinked and recreated file
would be a second, independent lock).
"""

import fcntl
import os
import stat
import time

from .errors import Busy, ConfigError


class NodeLock:
    def __init__(self, path, timeout=60.0, poll=0.05):
        self.path = path
        self.timeout = timeout
        self.poll = poll
        self.fd = None

    def __enter__(self):
        self._check_dir()
        deadline = time.monotonic() + self.timeout
        while True:
            fd = self._open()
            self._acquire(fd, deadline)
            if self._still_the_file(fd):
                self.fd = fd
                return self
            os.close(fd)  # replaced while we waited: lock the file that is there now

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None

    def _problem(self, what):
        return ConfigError(f"lock file {self.path}: {what}; any local user could then block "
                           f"or bypass the node lock. Set lock_file in the slabvol config to "
                           f"a path in a directory only root can write (the default is "
                           f"/run/slabvol/slabvol.lock)")

    def _check_dir(self):
        parent = os.path.dirname(self.path) or "."
        os.makedirs(parent, mode=0o700, exist_ok=True)
        st = os.lstat(parent)
        if not stat.S_ISDIR(st.st_mode):
            raise self._problem(f"{parent} is not a directory (a symlink?)")
        if st.st_uid != os.geteuid():
            raise self._problem(f"its directory {parent} is owned by uid {st.st_uid}, not "
                                f"by the driver's uid {os.geteuid()}")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise self._problem(f"its directory {parent} is writable by other users "
                                f"(mode {stat.S_IMODE(st.st_mode):o})")

    def _open(self):
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                         0o600)
        except OSError as exc:
            raise self._problem(f"cannot be opened without following a symlink "
                                f"({exc.strerror})") from None
        st = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(st.st_mode):
            problem = "is not a regular file"
        elif st.st_uid != os.geteuid():
            problem = f"is owned by uid {st.st_uid}, not by the driver's uid {os.geteuid()}"
        elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            problem = f"is writable by other users (mode {stat.S_IMODE(st.st_mode):o})"
        if problem:
            os.close(fd)
            raise self._problem(problem)
        return fd

    def _acquire(self, fd, deadline):
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise Busy(f"another slabvol operation has held {self.path} for more than "
                               f"{self.timeout:g} s; the kubelet will retry. If this persists, "
                               f"find the holder with `fuser -v {self.path}`") from None
                time.sleep(self.poll)

    def _still_the_file(self, fd):
        try:
            now = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)
