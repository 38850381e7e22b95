"""The node as install.sh sees it: files under ``--root``, commands through the
runner, and a record of every change (printed as it happens; only printed in ``--dry-run``)."""

import os
import shutil
import sys
from typing import List

from ..errors import SlabvolError
from ..files import replace_file
from ..process import Result, Runner
from .. import DRIVER_NAME, __version__
from .layout import DRIVER_DIR


class InstallError(SlabvolError):
    """The install cannot go on; the message says what happened and what to do."""


class UsageError(InstallError):
    """Bad command line (exit code 2)."""


class Host:
    def __init__(self, root="/", runner=None, dry_run=False, which=None, processes=None,
                 out=None, err=None):
        self.root = os.path.abspath(root)
        self.runner = runner or Runner()
        self.dry_run = dry_run
        self.which = which or shutil.which
        self._processes = processes
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.changes: List[str] = []

    # paths
    def path(self, host_path):
        """The file the installer touches for ``host_path`` (prefixed with --root)."""
        if self.root == "/":
            return host_path
        return os.path.join(self.root, host_path.lstrip("/"))

    # output
    def say(self, text=""):
        print(text, file=self.out, flush=True)

    def changed(self, text):
        self.changes.append(text)
        self.say(("  would: " if self.dry_run else "  changed: ") + text)

    def same(self, text):
        self.say("  unchanged: " + text)

    def warn(self, text):
        print(f"install.sh: warning: {text}", file=self.err, flush=True)

    def begin(self, what):
        self.say(f"slabvol {__version__}: {what} {DRIVER_NAME}"
                 + (f" (root {self.root})" if self.root != "/" else "")
                 + (" -- dry run, nothing will change" if self.dry_run else ""))

    def made(self):
        return f"{'Would make' if self.dry_run else 'Made'} {len(self.changes)} change(s)."

    # commands
    def query(self, argv):
        """Run a command that changes nothing (also in --dry-run)."""
        return self.runner.call(argv)

    def change(self, argv, what=None):
        """Run a command that changes the node (printed only, in --dry-run)."""
        return self.apply(what or f"ran `{' '.join(map(str, argv))}`", self.runner.run,
                          argv) or Result(tuple(argv), 0, "", "")

    def apply(self, what, action, *args):
        """Make a change and say so (only say it, in --dry-run)."""
        self.changed(what)
        return None if self.dry_run else action(*args)

    # files
    def write_file(self, host_path, text, what):
        """Replace a file atomically and durably unless it holds ``text``; whether it did."""
        if self.read_text(host_path) == text:
            self.same(host_path)
            return False
        self.apply(what, write_atomically, self.path(host_path), text)
        return True

    def make_dirs(self, host_path):
        if not os.path.isdir(self.path(host_path)):
            self.apply(f"created directory {host_path}", os.makedirs, self.path(host_path),
                       0o755, True)

    def remove(self, host_path, what=None, tree=False):
        """Remove a file or symlink (``tree``: a dir and everything in it); False when there
        was none."""
        target = self.path(host_path)
        if not os.path.lexists(target):
            return False
        self.apply(what or f"removed {host_path}", shutil.rmtree if tree else os.remove, target)
        return True

    def remove_empty_dir(self, host_path):
        """Remove a dir of ours once it is empty. Only dirs named after slabvol (or the
        driver's ax~vol_plugin) count as ours: never /var/tmp, /opt or a custom --prefix
        that merely happened to be emptied."""
        name = os.path.basename(host_path.rstrip("/"))
        if "slabvol" not in name and name != DRIVER_DIR:
            return
        target = self.path(host_path)
        try:
            if os.path.isdir(target) and not os.listdir(target):
                self.apply(f"removed empty directory {host_path}", os.rmdir, target)
        except OSError:
            pass

    # facts
    def processes(self):
        """[(pid, argv)] of the running processes (injected in tests)."""
        if self._processes is not None:
            return list(self._processes)
        procs = []
        try:
            pids = [name for name in os.listdir(self.path("/proc")) if name.isdigit()]
        except OSError:
            return procs
        for pid in pids:
            try:
                with open(self.path(f"/proc/{pid}/cmdline"), "rb") as handle:
                    raw = handle.read()
            except OSError:
                continue
            argv = [a.decode("utf-8", "surrogateescape") for a in raw.split(b"\0") if a]
            if argv:
                procs.append((int(pid), argv))
        return procs

    def has_systemd(self):
        return os.path.isdir(self.path("/run/systemd/system"))

    def read_only(self, host_path):
        """Whether ``host_path`` (or the nearest existing parent) is on a read-only fs."""
        probe = existing_parent(self.path(host_path))
        try:
            return bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
        except OSError:
            return False

    def free_bytes(self, host_path):
        st = os.statvfs(existing_parent(self.path(host_path)))
        return st.f_bavail * st.f_frsize

    def listdir(self, host_path, *suffixes):
        """The names in a dir (ending in one of ``suffixes``), sorted; [] if it is unreadable."""
        try:
            return sorted(n for n in os.listdir(self.path(host_path))
                          if n.endswith(suffixes or ""))
        except OSError:
            return []

    def read_text(self, host_path):
        try:
            with open(self.path(host_path), encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except OSError:
            return None


def existing_parent(path):
    path = os.path.abspath(path)
    while not os.path.exists(path) and path != os.path.dirname(path):
        path = os.path.dirname(path)
    return path


def write_atomically(path, text, mode=0o644, check=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    replace_file(path, text, mode, durable=True, check=check)
