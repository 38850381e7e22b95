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
                               f"{self.timeout:g} s ({self._holder()}); the kubelet will "
                               f"retry. If this persists, see `vol_plugin status` or "
                               f"`fuser -v {self.path}`") from None
                time.sleep(self.poll)

    def _holder(self):
        try:
            return format_lock_state(lock_state(self.path))
        except Exception as exc:  # noqa: BLE001 - only a hint in an error message
            return f"holder unknown: {exc}"

    def _still_the_file(self, fd):
        try:
            now = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


# -- who holds the lock (for status and the timeout message; never on the mount path) ------

PROC_LOCKS = "/proc/locks"


def parse_proc_locks(text, device, inode):
    """(holder pid or None, [waiting pids]) of the flock on the file ``device`` (st_dev),
    ``inode``, from /proc/locks (fs/locks.c lock_get_status: "N: FLOCK ADVISORY WRITE
    <pid> <major hex>:<minor hex>:<inode> ..."; a waiter's line has "->" after "N:")."""
    holder, waiting = None, []
    wanted = "%02x:%02x:%d" % (os.major(device), os.minor(device), inode)
    for line in text.splitlines():
        fields = line.split()
        if "->" in fields:
            fields.remove("->")
            blocked = True
        else:
            blocked = False
        if len(fields) < 6 or fields[1] != "FLOCK" or fields[5] != wanted:
            continue
        try:
            pid = int(fields[4])
        except ValueError:
            continue
        if blocked:
            waiting.append(pid)
        elif holder is None:
            holder = pid
    return holder, waiting


def lock_state(path, now=None):
    """What holds the node lock and what waits for it, for an operator:
    {"holder": {pid, command, running_s} or None, "waiting": [...]}; None when the lock
    file does not exist."""
    import psutil

    try:
        st = os.stat(path, follow_symlinks=False)
        with open(PROC_LOCKS, encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    holder, waiting = parse_proc_locks(text, st.st_dev, st.st_ino)
    now = time.time() if now is None else now

    def describe(pid):
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                command = " ".join(proc.cmdline()) or proc.name()
                return {"pid": pid, "command": command,
                        "running_s": round(max(0.0, now - proc.create_time()), 1)}
        except psutil.Error:
            return {"pid": pid, "command": "?", "running_s": None}
    return {"holder": None if holder is None else describe(holder),
            "waiting": [describe(pid) for pid in waiting]}


def format_lock_state(state):
    """One line for people: who holds the lock, for how long, and who waits."""
    if state is None or state["holder"] is None:
        return "free" if not (state and state["waiting"]) else \
            f"free, {len(state['waiting'])} waiting"
    h = state["holder"]
    age = "" if h["running_s"] is None else f", running for {h['running_s']:g} s"
    text = f"held by pid {h['pid']} ({h['command']}{age})"
    if state["waiting"]:
        text += f"; {len(state['waiting'])} waiting: " + ", ".join(
            f"pid {w['pid']} ({w['command']})" for w in state["waiting"])
    return text
