"""Which block devices slabvol's LVM commands look at (part of the LVM adapter, issue 10).

Left alone, every LVM command reads the label of every block device on the node, so a
node with many disks (or many loop devices of other tools) pays for all of them on every
mount, and LVM reads other VGs' metadata that slabvol has no business with. slabvol gives
each of its commands a *scope*: only the physical volumes of its own VG.

- LVM >= 2.03.12 (``--devices`` and the devices file appeared together in 2.03.12,
  lvm2 tools/args.h): ``--devices DEV`` once per PV. LVM then sees only those devices and
  skips its regex filters (lib/filters/filter-regex.c); the list came from a full scan that
  those filters governed.
- Older LVM: ``devices { filter = [ "a|^DEV$|", ..., "r|.*|" ] }`` merged into the
  command's one ``--config`` (LVM refuses a second ``--config``, tools/lvmcmdline.c). It
  replaces lvm.conf's ``filter``; lvm.conf's ``global_filter`` still applies.
- When the node's LVM uses a devices file (``devices/use_devicesfile = 1`` and the file,
  ``/etc/lvm/devices/system.devices`` by default, exists: lib/device/dev-cache.c
  setup_devices), slabvol adds nothing. LVM already reads only the devices listed there and
  follows them by stable IDs across renames; ``--devices`` would override the
  administrator's list (tools/args.h: "This overrides the devices file") and a filter
  would be ignored (lvmdevices(8)).

The device list is learned from the VG with a full scan (``vgs -o pv_name VG``) and cached
as JSON in the node lock's root-only directory (/run/slabvol by default: a reboot, which is
when device names change, empties it). A cache file is replaced whole, so a ``status``
without the lock may learn and write it too. When a narrowed command no longer finds the
VG, or a narrowed report finds one of its PVs missing, the devices were renamed or
replaced: ``lvm.Lvm`` learns again with a full scan and runs the command once more.
"""

import json
import os
import re
import stat
from collections import namedtuple

from .errors import CommandError, ToolMissing
from .lvm import report_rows

DEVICES_OPTION = (2, 3, 12)  # the first lvm2 release with --devices and the devices file
VERSION_ARGV = ("lvm", "version")
# The devices section merged with LVM's defaults (use_devicesfile: 1 upstream since 2.03.14,
# 0 in Debian's build). The section, not its two settings: lvmconfig 2.03.16 fails when
# given two nodes ("Cannot clone NULL config node", captured in boot 4).
DEVICES_FILE_ARGV = ("lvmconfig", "--typeconfig", "full", "devices")
# Without an lvm.conf, `--typeconfig full` fails ("Cannot clone NULL config node", captured
# in boot 4, whose guest has none) and LVM runs on its defaults: ask for those instead.
DEVICES_DEFAULT_ARGV = ("lvmconfig", "--typeconfig", "default", "devices")
# Device names that are safe inside a filter pattern once "." and "+" are bracketed.
SIMPLE_NAME = re.compile(r"/dev/[A-Za-z0-9/_.+:@-]+")

ALL, DEVICES, FILTER, DEVICES_FILE = "all", "devices", "filter", "devicesfile"


def pv_names_argv(vg_name):
    return ["vgs", "--reportformat", "json", "-o", "pv_name", vg_name]


def filter_config(devices):
    """A ``devices/filter`` that accepts exactly ``devices`` (by their names) and nothing
    else. A reject pattern alone is not enough: another name of a rejected device passes
    (tests/fixtures/lvm/README.md, boot 3)."""
    patterns = [re.sub(r"([.+])", r"[\1]", name) for name in devices]
    accept = [f'"a|^{pattern}$|"' for pattern in patterns]
    return "devices { filter = [ " + ", ".join(accept + ['"r|.*|"']) + " ] }"


class Scope(namedtuple("Scope", "kind devices", defaults=(ALL, ()))):
    """How one command is narrowed: ``kind`` is ALL (nothing added), DEVICES, FILTER or
    DEVICES_FILE (nothing added: LVM's own devices file narrows it); ``devices``: names."""

    __slots__ = ()

    @property
    def narrow(self):
        return self.kind in (DEVICES, FILTER)

    def apply(self, argv):
        """``argv`` with this scope's options right after the command's name (after
        ``lvm CMD``: LVM takes options only after the command)."""
        n = 2 if argv[0] == "lvm" else 1
        head, rest = list(argv[:n]), list(argv[n:])
        if self.kind == DEVICES:
            extra = [part for device in self.devices for part in ("--devices", device)]
            return [*head, *extra, *rest]
        if self.kind == FILTER:
            snippet = filter_config(self.devices)
            if rest[:1] == ["--config"]:  # lvm.py's backup settings: one --config only
                return [*head, "--config", f"{rest[1]} {snippet}", *rest[2:]]
            return [*head, "--config", snippet, *rest]
        return [*head, *rest]

    def to_json(self):
        return {"kind": self.kind, "devices": list(self.devices)}


def parse_version(text):
    """(major, minor, patch) from ``lvm version``, or None."""
    match = re.search(r"LVM version:\s*(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(part) for part in match.groups()) if match else None


def parse_lvmconfig(text):
    """{key: value} from ``lvmconfig`` lines such as ``use_devicesfile=1`` (or, for
    ``--typeconfig default``, ``# use_devicesfile=0``)."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.strip().lstrip("#").strip().partition("=")
        if sep:
            values[key.strip()] = value.strip().strip('"')
    return values


def parse_pv_names(text, vg_name):
    """The PVs' device names from ``vgs -o pv_name`` JSON (a missing PV's "[unknown]" and
    anything not under /dev skipped)."""
    try:
        names = [row.get("pv_name", "") for row in report_rows(text)]
    except (ValueError, KeyError, TypeError, AttributeError):
        return ()
    return tuple(sorted({name for name in names if name.startswith("/dev/")}))


class DeviceScan:
    """The scope of one VG's commands: read from ``path`` (a JSON file in a root-only
    directory), learned from LVM when there is none or it is stale."""

    @classmethod
    def beside(cls, lock_file, runner, vg_name):
        """The cache next to the node lock (/run/slabvol/<vg>.devices.json by default)."""
        return cls(runner, vg_name,
                   os.path.join(os.path.dirname(lock_file), f"{vg_name}.devices.json"))

    def __init__(self, runner, vg_name, path, system_dir=None):
        self.runner = runner
        self.vg = vg_name
        self.path = path
        self.system_dir = system_dir or os.environ.get("LVM_SYSTEM_DIR") or "/etc/lvm"
        self._scope = None

    def scope(self):
        if self._scope is None:
            self._scope = self._read() or self.learn()
        return self._scope

    def learn(self):
        """Ask LVM with a full scan (raises the LVM error of a missing VG) and cache it."""
        scope = self._ask()
        if scope is None:  # `lvm` would not run: not cached, the next call asks again
            scope = Scope(ALL)
        else:
            self._write(scope)
        self._scope = scope
        return scope

    # -- asking LVM ----------------------------------------------------------------------

    def _ask(self):
        try:
            result = self.runner.call(list(VERSION_ARGV))
        except ToolMissing:
            return None  # the command itself will say which tool is missing
        version = parse_version(result.stdout) if result.ok else None
        if version is None:
            return None  # an LVM we cannot place: scan as LVM itself would
        if version >= DEVICES_OPTION and self._devices_file_in_use():
            return Scope(DEVICES_FILE)
        result = self.runner.run(pv_names_argv(self.vg))  # a missing VG raises here
        devices = parse_pv_names(result.stdout, self.vg)
        if not devices:
            return Scope(ALL)
        if version >= DEVICES_OPTION:
            return Scope(DEVICES, devices)
        if all(SIMPLE_NAME.fullmatch(name) for name in devices):
            return Scope(FILTER, devices)
        return Scope(ALL)

    def _devices_file_in_use(self):
        """LVM's own rule (lib/device/dev-cache.c, setup_devices_file/setup_devices): the
        devices file is used when use_devicesfile is on and the file exists."""
        try:
            try:
                result = self.runner.run(list(DEVICES_FILE_ARGV))
            except CommandError:
                result = self.runner.run(list(DEVICES_DEFAULT_ARGV))
        except (CommandError, ToolMissing):
            return False
        values = parse_lvmconfig(result.stdout)
        if values.get("use_devicesfile") != "1":
            return False
        name = values.get("devicesfile") or "system.devices"
        return os.path.exists(os.path.join(self.system_dir, "devices", name))

    # -- the cache file ------------------------------------------------------------------

    def _dir_is_safe(self, create=False):
        """The cache steers which devices LVM may use: trust and write it only in a
        directory that no other user can write (the node lock's, see lock.py)."""
        directory = os.path.dirname(self.path) or "."
        try:
            if create:
                os.makedirs(directory, mode=0o700, exist_ok=True)
            st = os.lstat(directory)
        except OSError:
            return False
        return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
                and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))

    def _read(self):
        if not self._dir_is_safe():
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        with os.fdopen(fd, encoding="utf-8") as handle:
            st = os.fstat(handle.fileno())
            if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid()
                    or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
                return None
            try:
                data = json.load(handle)
                if data["vg"] != self.vg:
                    return None
                scope = Scope(data["kind"], tuple(data["devices"]))
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                return None
        if scope.kind not in (ALL, DEVICES, FILTER, DEVICES_FILE) or (
                scope.narrow and not scope.devices):
            return None
        return scope

    def _write(self, scope):
        if not self._dir_is_safe(create=True):
            return
        text = json.dumps(dict(scope.to_json(), vg=self.vg)) + "\n"
        try:
            from .files import replace_file  # (only when the list is learned)

            replace_file(self.path, text, 0o600)  # a reader (status) never sees half
        except OSError:
            pass  # only a cache: the next call learns again
