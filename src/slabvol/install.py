"""install.sh's logic: put slabvol on a node, idempotently and safely.

``install.sh`` only finds a Python >= 3.9 and runs :func:`run` from the checkout with it
(standard library only: this runs before any virtual environment exists). Everything is
checked before anything is changed — the arguments, the prerequisites, the config file,
the plugin dir, the disk or loop file — so bad input gets an error and changes nothing.
Then, in this order:

1. runtime: a virtual environment ``<prefix>/venvs/<version>-<source hash>`` with slabvol,
   click and psutil (or, with ``--python``, an interpreter that already has them); a
   second run with the same source reuses it;
2. volume group: on ``--disk`` (refusing disks that hold anything, unless ``--force``) or
   on a sparse ``--loopback`` file re-attached at boot by ``slabvol-loopback.service``;
   an existing one is left as it is;
3. ``/etc/slabvol/slabvol.conf`` with every key commented out, if there is none;
4. ``<plugin dir>/ax~vol_plugin/vol_plugin``: the checkout's ``vol_plugin`` with its
   ``#!`` pointing at the runtime, written to a temp file in the same dir, checked with
   ``init``, then renamed over the old one (the kubelet may exec it at any moment);
5. ``/usr/local/sbin/vol_plugin`` -> the driver, for ``vol_plugin status`` on the node;
6. ``<prefix>/install.json``: what was installed where, for ``--uninstall``.

External commands go through :class:`slabvol.process.Runner` (queries with ``call``,
changes with ``run``); files are written with plain Python. ``--root DIR`` (or
``SLABVOL_ROOT``) prefixes every file path the installer reads or writes, including
``/proc``, for tests; device paths, ``--python`` and the commands are used as given.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass, field, fields
from typing import List, Optional

from . import DRIVER_NAME, __version__
from . import config as config_mod
from .errors import CommandError, SlabvolError, ToolMissing
from .process import Result, Runner

DEFAULT_PREFIX = "/opt/slabvol"
DEFAULT_PLUGIN_DIR = "/usr/libexec/kubernetes/kubelet-plugins/volume/exec"
DRIVER_DIR = DRIVER_NAME.replace("/", "~")  # ax~vol_plugin
EXECUTABLE = DRIVER_NAME.split("/")[1]  # vol_plugin
SYMLINK = "/usr/local/sbin/vol_plugin"
DEFAULT_LOOP_FILE = "/var/lib/slabvol/slabvol.img"
DEFAULT_LOOP_SIZE = "20G"
MIN_LOOP_SIZE = 512 * 1024 * 1024
LOOP_UNIT = "slabvol-loopback.service"
UNIT_DIR = "/etc/systemd/system"
MANIFEST = "install.json"
VENVS = "venvs"
VENV_COMPLETE = ".slabvol-complete"
# Room for the metadata of many hundreds of tagged slabs (about 1.5 KiB each, and LVM
# needs space for two copies); the LVM default (about 1 MiB) fills up after a few hundred.
METADATA_SIZE = "64m"
MIN_PYTHON = (3, 9)
SHEBANG_MAX = 127  # older kernels cut a #! line after 127 bytes
ROOT_ENV = "SLABVOL_ROOT"
LVM_TAG_PREFIX = "slabvol."

# Where kubelets look for FlexVolume drivers (for --help and the messages).
KNOWN_PLUGIN_DIRS = (
    ("kubeadm, k3s and most distributions (the kubelet default)", DEFAULT_PLUGIN_DIR),
    ("GKE", "/home/kubernetes/flexvolume"),
    ("OpenShift", "/etc/kubernetes/kubelet-plugins/volume/exec"),
    ("RKE, RKE2", "/var/lib/kubelet/volumeplugins"),
    ("AKS", "/etc/kubernetes/volumeplugins"),
    ("read-only /usr (Flatcar, Fedora CoreOS)", "/var/lib/kubelet/volumeplugins, plus the "
                                                "kubelet flag --volume-plugin-dir"),
)

# What each config key means, for the default config file (tests keep it complete).
CONFIG_HELP = {
    "volume_group": "The LVM volume group that holds the slabs (install.sh --disk or "
                    "--loopback creates it). Set it before running install.sh to use "
                    "another name.",
    "kubelet_dir": "The kubelet's root dir (its --root-dir). slabvol only mounts into "
                   "<kubelet_dir>/pods/.",
    "prune_used_percent": "On unmount, a slab filled above this percentage is deleted "
                          "instead of kept for the next pod (0..100).",
    "cache_scope": "Who may reuse a free slab: 'namespace' (only pods of the namespace that "
                   "used it last; caches can hold images pulled with a team's credentials) "
                   "or 'node' (any pod on this node).",
    "log_file": "Every decision is logged here (never to the kubelet).",
    "log_max_bytes": "The log file is rotated at this size; 3 old files are kept.",
    "lock_file": "The node-wide lock held during each mount, unmount and gc. Hold it "
                 "yourself (flock FILE COMMAND) to do LVM maintenance without racing "
                 "the driver.",
    "lock_timeout": "Seconds a call waits for the lock before failing (the kubelet "
                    "retries).",
    "metrics_file": "Prometheus node-exporter textfile collector file, rewritten after "
                    "each operation, e.g. /var/lib/node_exporter/textfile_collector/"
                    "slabvol.prom. Empty: off.",
}

# Tools, by the package that provides them. Missing "required" ones stop the install.
LVM_TOOLS = ("pvs", "vgs", "lvs", "pvcreate", "vgcreate", "vgchange", "lvcreate", "lvchange",
             "lvremove")
PACKAGES = {  # package key -> name per distribution family
    "lvm2": {"debian": "lvm2", "rhel": "lvm2", "suse": "lvm2", "alpine": "lvm2"},
    "e2fsprogs": {"debian": "e2fsprogs", "rhel": "e2fsprogs", "suse": "e2fsprogs",
                  "alpine": "e2fsprogs"},
    "xfsprogs": {"debian": "xfsprogs", "rhel": "xfsprogs", "suse": "xfsprogs",
                 "alpine": "xfsprogs"},
    "util-linux": {"debian": "util-linux", "rhel": "util-linux", "suse": "util-linux",
                   "alpine": "util-linux"},
    "mount": {"debian": "mount", "rhel": "util-linux", "suse": "util-linux",
              "alpine": "util-linux"},
    # the venv module of the very interpreter install.sh runs with (python3.11-venv, ...)
    "venv": {"debian": f"python3.{sys.version_info[1]}-venv", "rhel": "python3",
             "suse": "python3", "alpine": "python3"},
}
INSTALL_COMMAND = {"debian": "apt-get install -y", "rhel": "dnf install -y",
                   "suse": "zypper install -y", "alpine": "apk add"}

PARTITION_TABLES = {"gpt", "PMBR", "dos", "atari", "bsd", "sgi", "sun", "mac", "aix",
                    "amiga", "ultrix", "solaris", "minix", "unixware"}


class InstallError(SlabvolError):
    """The install cannot go on; the message says what happened and what to do."""


class UsageError(InstallError):
    """Bad command line (exit code 2)."""


# -- the node: files under --root, commands through the runner, a record of changes ------

class Host:
    def __init__(self, root="/", runner=None, dry_run=False, which=None, processes=None,
                 out=None, err=None):
        self.root = os.path.abspath(root)
        self.runner = runner or Runner()
        self.dry_run = dry_run
        self._which = which or shutil.which
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

    # commands
    def which(self, name):
        return self._which(name)

    def query(self, argv):
        """Run a command that changes nothing (also in --dry-run)."""
        return self.runner.call(argv)

    def change(self, argv, what=None):
        """Run a command that changes the node (printed only, in --dry-run)."""
        self.changed(what or "ran `" + " ".join(str(a) for a in argv) + "`")
        if self.dry_run:
            return Result(tuple(argv), 0, "", "")
        return self.runner.run(argv)

    # files
    def write_file(self, host_path, text, mode=0o644, what=None):
        """Replace a file atomically (temp file in the same dir, fsync, rename)."""
        self.changed(what or f"wrote {host_path}")
        if self.dry_run:
            return
        write_atomically(self.path(host_path), text, mode)

    def make_dirs(self, host_path, mode=0o755):
        if os.path.isdir(self.path(host_path)):
            return
        self.changed(f"created directory {host_path}")
        if not self.dry_run:
            os.makedirs(self.path(host_path), mode=mode, exist_ok=True)

    def remove_file(self, host_path, what=None):
        target = self.path(host_path)
        if not os.path.lexists(target):
            return False
        self.changed(what or f"removed {host_path}")
        if not self.dry_run:
            os.remove(target)
        return True

    def remove_tree(self, host_path, what=None):
        target = self.path(host_path)
        if not os.path.lexists(target):
            return False
        self.changed(what or f"removed {host_path}")
        if not self.dry_run:
            shutil.rmtree(target)
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
                self.changed(f"removed empty directory {host_path}")
                if not self.dry_run:
                    os.rmdir(target)
        except OSError:
            pass

    # facts
    def processes(self):
        """[(pid, argv)] of the running processes (injected in tests)."""
        if self._processes is not None:
            return list(self._processes)
        return read_processes(self.path("/proc"))

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


def write_atomically(path, text, mode=0o644):
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(directory)


def fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- options ---------------------------------------------------------------------------

@dataclass
class Options:
    source: str = ""
    disk: Optional[str] = None
    loopback: Optional[str] = None
    size: Optional[int] = None
    size_given: bool = False
    skip_vg: bool = False
    force: bool = False
    prefix: str = DEFAULT_PREFIX
    python: Optional[str] = None
    wheelhouse: Optional[str] = None
    plugin_dir: Optional[str] = None
    root: str = "/"
    uninstall: bool = False
    purge: bool = False
    dry_run: bool = False


EPILOG = """\
examples:
  sudo ./install.sh --disk /dev/xvdz          # a dedicated, empty disk becomes the VG
  sudo ./install.sh --loopback --size 20G     # no spare disk: a sparse file on a loop device
  sudo ./install.sh                           # upgrade the driver, keep the existing VG
  sudo ./install.sh --uninstall               # remove driver and runtime, keep VG and slabs
  sudo ./install.sh --uninstall --purge       # ... and the slabs, the VG, the loop file

plugin dirs (where the kubelet looks for FlexVolume drivers):
""" + "\n".join(f"  {name}: {path}" for name, path in KNOWN_PLUGIN_DIRS) + """

Without --plugin-dir, install.sh asks the running kubelet (its --volume-plugin-dir flag,
volumePluginDir in its --config file or --config-dir drop-ins, k3s's --kubelet-arg) and
falls back to the kubelet default. Docs: docs/operations.md.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see ./install.sh --help)")


def build_parser():
    p = _Parser(prog="install.sh", formatter_class=argparse.RawDescriptionHelpFormatter,
                description=f"Install the {DRIVER_NAME} FlexVolume driver (slabvol "
                            f"{__version__}) on this node.\nIdempotent: run it again to "
                            f"upgrade. Everything is checked before anything changes.",
                epilog=EPILOG)
    vg = p.add_argument_group("volume group (default: keep the existing one)")
    vg.add_argument("--disk", metavar="DEV",
                    help="turn this empty, dedicated disk into the volume group; refused "
                         "if it holds a partition table, a filesystem or LVM metadata")
    vg.add_argument("--loopback", nargs="?", const=DEFAULT_LOOP_FILE, metavar="FILE",
                    help=f"put the volume group on a sparse FILE on a loop device, "
                         f"re-attached at boot by {LOOP_UNIT} (default FILE: "
                         f"{DEFAULT_LOOP_FILE})")
    vg.add_argument("--size", metavar="SIZE",
                    help=f"size of a new --loopback file, e.g. 20G, 512M "
                         f"(default {DEFAULT_LOOP_SIZE})")
    vg.add_argument("--skip-vg", action="store_true",
                    help="install only the driver; do not look at or create a volume group")
    vg.add_argument("--force", action="store_true",
                    help="--disk/--loopback: wipe the signatures found on the disk or "
                         "file; --uninstall: go on although slabs are mounted; "
                         "--loopback: create a file larger than the free space")
    rt = p.add_argument_group("runtime")
    rt.add_argument("--prefix", metavar="DIR", default=DEFAULT_PREFIX,
                    help=f"where the virtual environment goes (default {DEFAULT_PREFIX})")
    rt.add_argument("--python", metavar="PY",
                    help="use this interpreter, which already has slabvol, click and psutil "
                         "importable, instead of building a virtual environment")
    rt.add_argument("--wheelhouse", metavar="DIR",
                    help="install from the wheels in DIR only (pip --no-index "
                         "--find-links DIR), for nodes without internet access")
    rt.add_argument("--plugin-dir", metavar="DIR",
                    help="the kubelet's FlexVolume plugin dir (default: detected)")
    rm = p.add_argument_group("removal")
    rm.add_argument("--uninstall", action="store_true",
                    help="remove the driver, the symlink and the runtime; keep the "
                         "config, the volume group and its slabs")
    rm.add_argument("--purge", action="store_true",
                    help="with --uninstall: also remove every slab (LVs tagged slabvol.*), "
                         "the volume group if nothing else is in it, the loop file and "
                         "its unit, and the config")
    misc = p.add_argument_group("other")
    misc.add_argument("--dry-run", action="store_true",
                      help="check everything and print what would change; change nothing")
    misc.add_argument("--root", metavar="DIR",
                      help=f"treat DIR as / for every file (tests; env {ROOT_ENV})")
    misc.add_argument("--source", help=argparse.SUPPRESS)
    misc.add_argument("--version", action="version",
                      version=f"slabvol install {__version__}")
    return p


_SIZE = re.compile(r"(\d+)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._+/@:-]*")


def parse_size(text):
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise UsageError(f"--size {text!r} is not a size; use e.g. 20G or 512M")
    power = " KMGT".index(match.group(2).upper() or " ")
    return int(match.group(1)) * 1024 ** power


def human_size(size):
    """20G, 512M, 1.5G, 983.5M: binary units, at most one decimal."""
    for unit, power in (("T", 4), ("G", 3), ("M", 2), ("K", 1)):
        if size >= 1024 ** power:
            value = size / 1024 ** power
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{size}B"


def _check_path(option, value, *, safe=False):
    if not os.path.isabs(value):
        raise UsageError(f"{option} {value!r} must be an absolute path")
    if safe and not _SAFE_PATH.fullmatch(value):
        raise UsageError(f"{option} {value!r} may only contain letters, digits and "
                         f"._+/@:- (it ends up in a #! line or a systemd unit)")
    return os.path.normpath(value)


def parse_args(argv, environ=None):
    environ = os.environ if environ is None else environ
    ns = build_parser().parse_args(argv)
    o = Options()
    o.source = os.path.abspath(ns.source or default_source())
    o.root = os.path.abspath(ns.root or environ.get(ROOT_ENV) or "/")
    o.force, o.skip_vg, o.dry_run = ns.force, ns.skip_vg, ns.dry_run
    o.uninstall, o.purge = ns.uninstall, ns.purge
    o.prefix = _check_path("--prefix", ns.prefix, safe=True)
    if o.prefix == "/":
        raise UsageError("--prefix / would put the runtime into the root dir; use a dir of "
                         "its own such as /opt/slabvol")
    if ns.plugin_dir:
        o.plugin_dir = _check_path("--plugin-dir", ns.plugin_dir)
    if not os.path.isdir(o.root):
        raise UsageError(f"--root {o.root} is not a directory")
    if ns.purge and not ns.uninstall:
        raise UsageError("--purge deletes every slab and the volume group; it only works "
                         "together with --uninstall (./install.sh --uninstall --purge)")
    if ns.uninstall:
        used = [flag for flag, value in (("--disk", ns.disk), ("--loopback", ns.loopback),
                                         ("--size", ns.size), ("--python", ns.python),
                                         ("--wheelhouse", ns.wheelhouse),
                                         ("--skip-vg", ns.skip_vg)) if value]
        if used:
            raise UsageError(f"{', '.join(used)} cannot be combined with --uninstall")
        return o
    chosen = [flag for flag, value in (("--disk", ns.disk), ("--loopback", ns.loopback),
                                       ("--skip-vg", ns.skip_vg)) if value]
    if len(chosen) > 1:
        raise UsageError(f"choose one of {' and '.join(chosen)}")
    if ns.size and not ns.loopback:
        raise UsageError("--size is the size of a --loopback file; it needs --loopback")
    if ns.disk:
        o.disk = _check_path("--disk", ns.disk)
        if not o.disk.startswith("/dev/"):
            raise UsageError(f"--disk {ns.disk!r} is not a device path under /dev/ "
                             f"(list the disks with `lsblk`)")
    if ns.loopback:
        o.loopback = _check_path("--loopback", ns.loopback, safe=True)
        o.size = parse_size(ns.size or DEFAULT_LOOP_SIZE)
        o.size_given = bool(ns.size)
        if o.size < MIN_LOOP_SIZE:
            raise UsageError(f"--size {ns.size} is too small; a loopback volume group needs "
                             f"at least {human_size(MIN_LOOP_SIZE)}")
    if ns.python and ns.wheelhouse:
        raise UsageError("--wheelhouse is for building the virtual environment; with "
                         "--python no environment is built")
    if ns.python:
        found = shutil.which(ns.python)
        if not found:
            raise UsageError(f"--python {ns.python}: no such executable")
        o.python = found if os.path.isabs(found) else os.path.abspath(found)
        if not _SAFE_PATH.fullmatch(o.python):
            raise UsageError(f"--python {o.python!r} may only contain letters, digits and "
                             f"._+/@:- (it becomes the #! line of the driver)")
    if ns.wheelhouse:
        o.wheelhouse = os.path.abspath(ns.wheelhouse)
        if not os.path.isdir(o.wheelhouse):
            raise UsageError(f"--wheelhouse {ns.wheelhouse}: no such directory")
    return o


def default_source():
    """The checkout this module lives in (src/slabvol/install.py -> the repo root)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# -- prerequisites ----------------------------------------------------------------------

def distro_family(host):
    text = host.read_text("/etc/os-release") or ""
    ids = set()
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key in ("ID", "ID_LIKE"):
            ids.update(value.strip().strip('"').lower().split())
    for family, names in (("debian", {"debian", "ubuntu"}),
                          ("rhel", {"rhel", "centos", "fedora", "rocky", "almalinux", "amzn",
                                    "ol"}),
                          ("suse", {"suse", "sles", "opensuse", "opensuse-leap"}),
                          ("alpine", {"alpine"})):
        if ids & names:
            return family
    return None


def install_hint(host, package_keys):
    family = distro_family(host)
    keys = list(dict.fromkeys(package_keys))
    if family:
        names = " ".join(dict.fromkeys(PACKAGES[k][family] for k in keys))
        return f"`{INSTALL_COMMAND[family]} {names}`"
    deb = " ".join(dict.fromkeys(PACKAGES[k]["debian"] for k in keys))
    rpm = " ".join(dict.fromkeys(PACKAGES[k]["rhel"] for k in keys))
    return f"`apt-get install -y {deb}` (Debian, Ubuntu) or `dnf install -y {rpm}` (RHEL, Fedora)"


def check_prerequisites(host, opts, need_venv):
    """Raise InstallError naming every missing tool and the command that installs it."""
    missing, keys = [], []

    def need(tools, key):
        absent = [t for t in tools if not host.which(t)]
        if absent:
            missing.append(", ".join(absent))
            keys.append(key)

    if sys.version_info < MIN_PYTHON:
        raise InstallError(f"Python {'.'.join(map(str, MIN_PYTHON))} or newer is needed, "
                           f"this is {sys.version.split()[0]} ({sys.executable}); install a "
                           f"newer python3 and run install.sh again")
    need(LVM_TOOLS, "lvm2")
    need(("mkfs.ext4",), "e2fsprogs")
    need(("mount", "umount"), "mount")
    util = ["flock"]
    if opts.disk:
        util += ["wipefs", "lsblk"]
    if opts.loopback:
        util += ["wipefs", "losetup"]
    need(tuple(dict.fromkeys(util)), "util-linux")
    if need_venv:
        probe = host.query([sys.executable, "-m", "ensurepip", "--version"])
        if not probe.ok:
            missing.append(f"Python's venv/ensurepip for {sys.executable}")
            keys.append("venv")
    if missing:
        raise InstallError("missing prerequisites: " + "; ".join(missing) + ". Install them "
                           "with " + install_hint(host, keys) + " and run install.sh again")
    if not host.which("mkfs.xfs"):
        host.warn("mkfs.xfs is not installed: pods asking for fsType xfs will fail to mount "
                  "(ext4 pods are fine); install it with " + install_hint(host, ["xfsprogs"]))


# -- the kubelet: where it looks for FlexVolume drivers --------------------------------

@dataclass
class KubeletInfo:
    plugin_dir: Optional[str] = None
    source: str = ""
    root_dir: Optional[str] = None
    found: bool = False
    conflict: str = ""  # several kubelets disagree: --plugin-dir is needed


def read_processes(proc_dir):
    procs = []
    try:
        names = os.listdir(proc_dir)
    except OSError:
        return procs
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(os.path.join(proc_dir, name, "cmdline"), "rb") as handle:
                raw = handle.read()
        except OSError:
            continue
        argv = [a.decode("utf-8", "surrogateescape") for a in raw.split(b"\0") if a]
        if argv:
            procs.append((int(name), argv))
    return procs


def _normalise_argv(argv):
    # k3s hides its arguments with setproctitle: "/usr/local/bin/k3s server" in one string.
    if len(argv) == 1 and " " in argv[0]:
        return argv[0].split()
    return list(argv)


def flag_values(argv, name):
    """Values of ``--name=V`` and ``--name V`` in order (pflag: the last one wins)."""
    values = []
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith(f"--{name}="):
            values.append(arg.split("=", 1)[1])
    return values


def _last(values):
    return values[-1] if values else None


_CONFIG_KEY = re.compile(r"""^\s*["']?volumePluginDir["']?\s*:\s*["']?([^"'\s,#}]+)""",
                         re.MULTILINE)
_K3S_ARG = re.compile(r"""(?<![\w-])volume-plugin-dir=([^\s"',\]]+)""")
_K3S_ROOT = re.compile(r"""(?<![\w-])root-dir=([^\s"',\]]+)""")


def config_plugin_dir(text):
    """volumePluginDir from a kubelet config file (YAML or JSON), by a line regex."""
    if not text:
        return None
    found = _CONFIG_KEY.findall(text)
    return found[-1] if found else None


def _uncommented(text):
    return "\n".join(line for line in (text or "").splitlines()
                     if not line.lstrip().startswith("#"))


def _kubelet_kind(argv):
    base = os.path.basename(argv[0]) if argv else ""
    if base == "kubelet" or (base == "hyperkube" and argv[1:2] == ["kubelet"]):
        return "kubelet"
    if base == "kubelite":
        return "microk8s"
    if base in ("k3s", "k3s-server", "k3s-agent") and (
            base != "k3s" or argv[1:2] in (["server"], ["agent"])):
        return "k3s"
    return None


def detect_kubelet(host):
    """Ask the running kubelet(s) where they look for FlexVolume drivers."""
    results = []
    for pid, argv in host.processes():
        argv = _normalise_argv(argv)
        kind = _kubelet_kind(argv)
        if kind == "kubelet":
            results.append(_from_kubelet(host, pid, argv))
        elif kind == "microk8s":
            args_file = _last(flag_values(argv, "kubelet-args-file"))
            text = host.read_text(args_file) if args_file else None
            results.append(_from_kubelet(host, pid, (text or "").split(), "MicroK8s kubelite"))
        elif kind == "k3s":
            results.append(_from_k3s(host, pid, argv))
    if not results:
        return KubeletInfo()
    for r in results:
        if r.plugin_dir:
            r.plugin_dir = os.path.normpath(r.plugin_dir)
    dirs = {r.plugin_dir or DEFAULT_PLUGIN_DIR for r in results}
    if len(dirs) > 1:
        return KubeletInfo(found=True, conflict="; ".join(
            f"{r.plugin_dir or DEFAULT_PLUGIN_DIR} from {r.source}" for r in results))
    return results[0]


def _read_in_process_root(host, pid, path):
    """A file as the process sees it (a containerised kubelet), else on the host."""
    text = host.read_text(f"/proc/{pid}/root{path}")
    return text if text is not None else host.read_text(path)


def _from_kubelet(host, pid, argv, what="kubelet"):
    info = KubeletInfo(found=True, root_dir=_last(flag_values(argv, "root-dir")))
    flag = _last(flag_values(argv, "volume-plugin-dir"))
    if flag:
        info.plugin_dir, info.source = flag, f"the running {what}'s --volume-plugin-dir " \
                                             f"flag (pid {pid})"
        return info
    # Drop-ins (--config-dir) override the config file; the flag overrides both.
    drop_dir = _last(flag_values(argv, "config-dir"))
    if drop_dir and _from_drop_ins(host, pid, drop_dir, info):
        return info
    config = _last(flag_values(argv, "config"))
    if config:
        value = config_plugin_dir(_read_in_process_root(host, pid, config))
        if value:
            info.plugin_dir, info.source = value, f"volumePluginDir in {config} (pid {pid})"
            return info
    info.source = f"the running {what} (pid {pid}) sets no plugin dir: the kubelet default"
    return info


def _from_drop_ins(host, pid, drop_dir, info):
    """volumePluginDir from kubelet config drop-ins (*.conf, applied in name order)."""
    try:
        names = sorted(n for n in os.listdir(host.path(drop_dir)) if n.endswith(".conf"))
    except OSError:
        names = []
    for name in reversed(names):
        value = config_plugin_dir(_read_in_process_root(host, pid, f"{drop_dir}/{name}"))
        if value:
            info.plugin_dir = value
            info.source = f"volumePluginDir in {drop_dir}/{name}"
            return True
    return False


K3S_KUBELET_DROP_INS = "/var/lib/rancher/k3s/agent/etc/kubelet.conf.d"
K3S_FILES = ("/etc/rancher/k3s/config.yaml", "/etc/systemd/system/k3s.service",
             "/etc/systemd/system/k3s-agent.service")


def _from_k3s(host, pid, argv):
    """k3s runs the kubelet inside its own process: look at --kubelet-arg, in the
    arguments (often hidden by k3s), its config files and its systemd unit."""
    info = KubeletInfo(found=True)
    kubelet_args = flag_values(argv, "kubelet-arg")
    for arg in kubelet_args:
        key, _, value = arg.lstrip("-").partition("=")
        if key == "volume-plugin-dir" and value:
            info.plugin_dir = value
            info.source = f"k3s --kubelet-arg volume-plugin-dir (pid {pid})"
        if key == "root-dir" and value:
            info.root_dir = value
    if info.plugin_dir:
        return info
    files = list(K3S_FILES) + flag_values(argv, "config") + flag_values(argv, "c")
    drop = "/etc/rancher/k3s/config.yaml.d"
    try:
        files += [f"{drop}/{n}" for n in sorted(os.listdir(host.path(drop)))
                  if n.endswith((".yaml", ".yml"))]
    except OSError:
        pass
    for name in files:
        text = _uncommented(host.read_text(name))
        found = _K3S_ARG.findall(text)
        root = _K3S_ROOT.findall(text)
        if root and not info.root_dir:
            info.root_dir = root[-1]
        if found:
            info.plugin_dir = found[-1]
            info.source = f"k3s kubelet-arg volume-plugin-dir in {name}"
            return info
    if _from_drop_ins(host, pid, K3S_KUBELET_DROP_INS, info):
        return info
    info.source = f"k3s (pid {pid}) sets no volume-plugin-dir kubelet-arg: the kubelet default"
    return info


def resolve_plugin_dir(host, opts, kubelet):
    if kubelet.conflict and not opts.plugin_dir:
        raise InstallError(f"found several kubelets using different plugin dirs "
                           f"({kubelet.conflict}); pass the right one with --plugin-dir")
    if opts.plugin_dir:
        if kubelet.found and not kubelet.conflict \
                and (kubelet.plugin_dir or DEFAULT_PLUGIN_DIR) != opts.plugin_dir:
            host.warn(f"--plugin-dir {opts.plugin_dir} is not where the running kubelet looks "
                      f"({kubelet.plugin_dir or DEFAULT_PLUGIN_DIR}, from {kubelet.source}); "
                      f"the kubelet will not see the driver unless you change its "
                      f"--volume-plugin-dir too")
        return opts.plugin_dir, "--plugin-dir"
    if kubelet.found:
        return kubelet.plugin_dir or DEFAULT_PLUGIN_DIR, kubelet.source
    return DEFAULT_PLUGIN_DIR, ("the kubelet default; no running kubelet was found, pass "
                                "--plugin-dir if yours uses another dir")


def check_writable(host, plugin_dir):
    if host.read_only(plugin_dir):
        raise InstallError(
            f"the plugin dir {plugin_dir} is on a read-only filesystem (as /usr is on Flatcar, "
            f"Fedora CoreOS and other image-based systems). Install into a writable dir and "
            f"point the kubelet at it: ./install.sh --plugin-dir "
            f"/var/lib/kubelet/volumeplugins ..., then set the kubelet's "
            f"--volume-plugin-dir=/var/lib/kubelet/volumeplugins (or volumePluginDir in its "
            f"config file) and restart it")


# -- volume group ----------------------------------------------------------------------

def _json(result, what):
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise InstallError(f"could not parse the output of `{' '.join(result.argv)}` "
                           f"({what}): {result.stdout.strip()[:200]!r}") from None


def list_pvs(host):
    """[(pv_name, vg_name)] of every PV LVM sees."""
    result = host.query(["pvs", "--reportformat", "json", "-o", "pv_name,vg_name"])
    if not result.ok:
        raise InstallError(f"`pvs` failed: {result.stderr.strip() or result.stdout.strip()}; "
                           f"check that LVM works on this node (run `pvs` as root)")
    data = _json(result, "physical volumes")
    rows = [row for section in data.get("report", []) for row in section.get("pv", [])]
    return [(row.get("pv_name", ""), row.get("vg_name", "")) for row in rows]


def _same_device(host, a, b):
    try:
        return os.path.realpath(host.path(a)) == os.path.realpath(host.path(b))
    except OSError:
        return a == b


def _signatures(host, target):
    """[(type, description)] of the signatures on a device or file."""
    result = host.query(["wipefs", "--no-act", "--json", target])
    if result.ok:
        data = _json(result, "signatures") if result.stdout.strip() else {}
        out = []
        for sig in data.get("signatures", []):
            kind = sig.get("type") or "unknown"
            label = f" labelled {sig['label']!r}" if sig.get("label") else ""
            out.append((kind, f"{kind}{label} at offset {sig.get('offset', '?')}"))
        return out
    # util-linux before 2.33 has no wipefs --json: fall back to blkid's low-level probe.
    probe = host.query(["blkid", "--probe", "--output", "export", target])
    if probe.returncode == 2:  # nothing found
        return []
    if not probe.ok:
        raise InstallError(f"could not read the signatures on {target}: "
                           f"{result.stderr.strip()} / {probe.stderr.strip()}")
    values = dict(line.split("=", 1) for line in probe.stdout.splitlines() if "=" in line)
    out = []
    for key in ("PTTYPE", "TYPE"):
        if values.get(key):
            label = f" labelled {values['LABEL']!r}" if key == "TYPE" and values.get("LABEL") \
                else ""
            out.append((values[key], f"{values[key]}{label}"))
    return out


def _describe_signatures(sigs, skip_lvm=False):
    found, seen = [], set()
    for kind, text in sigs:
        if kind in seen or (skip_lvm and kind == "LVM2_member"):
            continue
        seen.add(kind)
        if kind in PARTITION_TABLES:
            if kind == "PMBR" and "gpt" in {k for k, _ in sigs}:
                continue
            found.append(f"a partition table ({text})")
        elif kind == "LVM2_member":
            found.append(f"LVM metadata ({text}) that this host's LVM does not show as a "
                         f"volume group (another host's disk, or excluded by the LVM devices "
                         f"file or filter)")
        else:
            found.append(f"a filesystem or other signature ({text})")
    return found


def _lsblk_nodes(tree):
    yield tree
    for child in tree.get("children") or []:
        yield from _lsblk_nodes(child)


def inspect_disk(host, dev, pvs):
    """(blockers, findings) for a disk that is not yet ours: blockers stop even --force."""
    result = host.query(["lsblk", "--json", "--paths", "-o", "NAME,TYPE,FSTYPE,MOUNTPOINT",
                         dev])
    if not result.ok:
        raise InstallError(f"{dev} is not a block device this host knows "
                           f"({result.stderr.strip() or 'lsblk failed'}); pass the path of a "
                           f"whole disk, e.g. /dev/xvdz (list them with `lsblk`)")
    devices = _json(result, "block devices").get("blockdevices") or []
    if not devices:
        raise InstallError(f"lsblk does not list {dev}; pass the path of a whole disk")
    tree = devices[0]
    blockers, findings = [], []
    if tree.get("type") == "rom":
        blockers.append(f"{dev} is a CD/DVD drive")
    children = list(_lsblk_nodes(tree))[1:]
    for node in [tree] + children:
        mounts = [m for m in ([node.get("mountpoint")] + list(node.get("mountpoints") or []))
                  if m]
        for mount in dict.fromkeys(mounts):
            where = "swap" if mount == "[SWAP]" else f"mounted at {mount}"
            blockers.append(f"{node.get('name')} is {where}")
    holders = [c for c in children if c.get("type") not in ("part",)]
    for holder in holders:
        blockers.append(f"{holder.get('name')} ({holder.get('type')}) is active on it")
    parts = [c.get("name") for c in children if c.get("type") == "part"]
    if parts:
        findings.append(f"{len(parts)} partition(s): {', '.join(parts)}")
    pv_vg = next((vg for name, vg in pvs if _same_device(host, name, dev)), None)
    if pv_vg:
        findings.append(f"LVM metadata of another volume group, {pv_vg!r}")
    elif pv_vg is not None:
        findings.append("an LVM physical volume that belongs to no volume group")
    sigs = _signatures(host, dev)
    findings += _describe_signatures(sigs, skip_lvm=pv_vg is not None)
    return blockers, findings


def _refuse(what, findings, force_hint):
    return InstallError(
        f"refusing to use {what}: it holds {'; '.join(findings)}. Everything on it would be "
        f"destroyed. If you are sure, run again with --force (its signatures are wiped "
        f"first){force_hint}; otherwise pick an empty disk (check with `lsblk -f` and "
        f"`wipefs --no-act DEVICE`)")


@dataclass
class VgPlan:
    """What to do about the volume group, decided before anything changes."""

    action: str  # keep | create-disk | create-loop | skip
    vg: str
    device: str = ""
    wipe: bool = False
    loop_file: Optional[str] = None
    create_file: bool = False
    attach: bool = False
    loop_device: Optional[str] = None
    note: str = ""
    messages: List[str] = field(default_factory=list)


def plan_volume_group(host, opts, vg):
    if opts.skip_vg:
        return VgPlan("skip", vg, note="--skip-vg: volume group not looked at")
    pvs = list_pvs(host)
    ours = [name for name, owner in pvs if owner == vg]
    if opts.disk:
        return _plan_disk(host, opts, vg, pvs, ours)
    if opts.loopback:
        return _plan_loop(host, opts, vg, pvs, ours)
    if ours:
        return VgPlan("keep", vg, note=f"volume group {vg} exists on {', '.join(ours)}")
    raise InstallError(f"there is no volume group {vg!r} on this node: create it with "
                       f"--disk /dev/DISK (a dedicated, empty disk) or --loopback [FILE] "
                       f"(a sparse file), or pass --skip-vg to install only the driver")


def _plan_disk(host, opts, vg, pvs, ours):
    dev = opts.disk
    if not os.path.exists(host.path(dev)):
        raise InstallError(f"{dev} does not exist; list the disks with `lsblk`")
    if any(_same_device(host, name, dev) for name in ours):
        return VgPlan("keep", vg, device=dev, note=f"volume group {vg} already on {dev}")
    if ours:
        raise InstallError(f"volume group {vg!r} already exists on {', '.join(ours)}, not on "
                           f"{dev}; install.sh does not add disks to it. Run without --disk to "
                           f"keep it, or add the disk yourself: `vgextend {vg} {dev}`")
    blockers, findings = inspect_disk(host, dev, pvs)
    if blockers:
        raise InstallError(f"refusing to use {dev}: {'; '.join(blockers)}. --force does not "
                           f"override this; unmount it / stop using it first")
    if findings and not opts.force:
        raise _refuse(dev, findings, "")
    plan = VgPlan("create-disk", vg, device=dev, wipe=bool(findings))
    if findings:
        plan.messages.append(f"--force: wiping {'; '.join(findings)} on {dev}")
    return plan


def loop_devices(host):
    """{loop device: backing file} of the attached loop devices."""
    result = host.query(["losetup", "--list", "--json", "--output", "NAME,BACK-FILE"])
    if not result.ok:
        raise InstallError(f"`losetup --list` failed: {result.stderr.strip()}")
    if not result.stdout.strip():
        return {}
    data = _json(result, "loop devices")
    out = {}
    for row in data.get("loopdevices", []):
        back = (row.get("back-file") or "").strip()
        if back.endswith(" (deleted)"):
            continue
        out[row.get("name")] = back
    return out


def loops_of(host, loop_file):
    real = os.path.realpath(host.path(loop_file))
    return [name for name, back in loop_devices(host).items()
            if back and os.path.realpath(back) == real]


def _plan_loop(host, opts, vg, pvs, ours):
    loop_file = opts.loopback
    attached = loops_of(host, loop_file)
    if ours:
        if any(any(_same_device(host, name, loop) for loop in attached) for name in ours):
            return VgPlan("keep", vg, loop_file=loop_file, loop_device=attached[0],
                          note=f"volume group {vg} already on {attached[0]} ({loop_file})")
        raise InstallError(f"volume group {vg!r} already exists on {', '.join(ours)}, not on "
                           f"{loop_file}; run without --loopback to keep it")
    plan = VgPlan("create-loop", vg, loop_file=loop_file)
    path = host.path(loop_file)
    if not os.path.exists(path):
        parent_free = host.free_bytes(loop_file)
        if parent_free < opts.size and not opts.force:
            raise InstallError(
                f"{os.path.dirname(loop_file)} has {human_size(parent_free)} free, less than "
                f"--size {human_size(opts.size)}. The file is sparse and grows as slabs fill; "
                f"when the filesystem under it is full, every slab gets I/O errors. Use a "
                f"smaller --size, another FILE, or --force")
        plan.create_file, plan.attach = True, True
        return plan
    if not os.path.isfile(path):
        raise InstallError(f"--loopback {loop_file} exists and is not a regular file")
    size = os.path.getsize(path)
    if size < MIN_LOOP_SIZE:
        raise InstallError(f"{loop_file} exists and is only {human_size(size)}; remove it or "
                           f"choose another --loopback FILE")
    if opts.size_given and size != opts.size:
        plan.messages.append(f"{loop_file} exists ({human_size(size)}); it is reused as it is, "
                             f"not resized to {human_size(opts.size)}")
    if attached:
        plan.loop_device = attached[0]
        target = attached[0]
        pv_vg = next((owner for name, owner in pvs if _same_device(host, name, target)), None)
    else:
        plan.attach = True
        target, pv_vg = path, None
    sigs = _signatures(host, target)
    if not attached and sigs and all(kind == "LVM2_member" for kind, _ in sigs):
        # Most likely our own volume group, not attached since the last boot: attach the
        # file and look (detached again if it holds something else).
        plan.action = "activate-loop"
        return plan
    findings = []
    if pv_vg:
        findings.append(f"LVM metadata of another volume group, {pv_vg!r}")
    elif pv_vg is not None:
        findings.append("an LVM physical volume that belongs to no volume group")
    findings += _describe_signatures(sigs, skip_lvm=pv_vg is not None)
    if findings and not opts.force:
        raise _refuse(loop_file, findings, "")
    plan.wipe = bool(findings)
    if findings:
        plan.messages.append(f"--force: wiping {'; '.join(findings)} on {loop_file}")
    return plan


def apply_volume_group(host, opts, plan):
    for message in plan.messages:
        host.warn(message)
    if plan.action == "skip":
        host.say(f"  skipped: {plan.note}")
        return plan
    if plan.action == "keep":
        host.same(plan.note)
    elif plan.action == "create-disk":
        if plan.wipe:
            host.change(["wipefs", "--all", plan.device])
        _create_vg(host, plan.vg, plan.device, rollback=None)
    else:
        _apply_loop(host, opts, plan)
    if plan.loop_file:
        install_loop_unit(host, plan.vg, plan.loop_file)
    return plan


def _create_vg(host, vg, device, rollback):
    try:
        host.change(["pvcreate", "--metadatasize", METADATA_SIZE, device],
                    f"created LVM physical volume on {device} (metadata area {METADATA_SIZE})")
        try:
            host.change(["vgcreate", vg, device], f"created volume group {vg} on {device}")
        except SlabvolError:
            host.query(["pvremove", device])
            raise
    except SlabvolError as exc:
        if rollback:
            rollback()
        raise InstallError(f"could not create volume group {vg} on {device}: {exc}") from None


def _apply_loop(host, opts, plan):
    loop_file = plan.loop_file
    created = False
    if plan.create_file:
        host.make_dirs(os.path.dirname(loop_file))
        host.changed(f"created sparse file {loop_file} ({human_size(opts.size)})")
        if not host.dry_run:
            with open(host.path(loop_file), "xb") as handle:
                handle.truncate(opts.size)
            os.chmod(host.path(loop_file), 0o600)
        created = True
    attached_now = None
    if plan.attach:
        result = host.change(["losetup", "--find", "--show", host.path(loop_file)],
                             f"attached {loop_file} to a loop device")
        attached_now = result.stdout.strip() or "/dev/loopN"
        plan.loop_device = attached_now
        if not host.dry_run and host.which("udevadm"):
            host.query(["udevadm", "settle", "--timeout=30"])

    def rollback():
        if attached_now and not host.dry_run:
            host.query(["losetup", "--detach", attached_now])
        if created and not host.dry_run:
            os.remove(host.path(loop_file))

    if plan.action == "activate-loop":
        pvs = [] if host.dry_run else list_pvs(host)
        owner = next((vg for name, vg in pvs if _same_device(host, name, plan.loop_device)),
                     None)
        if host.dry_run or owner == plan.vg:
            host.change(["vgchange", "--activate", "y", plan.vg],
                        f"activated volume group {plan.vg} found in {loop_file}")
            return
        rollback()
        what = (f"LVM metadata of another volume group, {owner!r}" if owner else
                "LVM metadata of no volume group this host can use")
        if not opts.force:
            raise _refuse(loop_file, [what], "")
        host.warn(f"--force: wiping {what} on {loop_file}")
        result = host.change(["losetup", "--find", "--show", host.path(loop_file)],
                             f"attached {loop_file} to a loop device")
        attached_now = plan.loop_device = result.stdout.strip()
        plan.wipe = True
    if plan.wipe:
        host.change(["wipefs", "--all", plan.loop_device])
    _create_vg(host, plan.vg, plan.loop_device, rollback)


def loop_unit_text(vg, loop_file):
    return f"""\
# Written by slabvol's install.sh; removed by `install.sh --uninstall --purge`.
# slabvol-loopback-file: {loop_file}
[Unit]
Description=slabvol: attach the loop-backed volume group {vg} ({loop_file})
RequiresMountsFor={os.path.dirname(loop_file)}
Before=kubelet.service k3s.service k3s-agent.service rke2-server.service rke2-agent.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'losetup --associated {loop_file} | grep -q . || losetup --find {loop_file}'
ExecStart=-/bin/sh -c 'udevadm settle --timeout=30'
ExecStart=/bin/sh -c 'vgchange --activate y {vg}'

[Install]
WantedBy=multi-user.target
"""


def install_loop_unit(host, vg, loop_file):
    unit = f"{UNIT_DIR}/{LOOP_UNIT}"
    text = loop_unit_text(vg, loop_file)
    fresh = host.read_text(unit) != text
    if fresh:
        host.write_file(unit, text, what=f"wrote {unit} (re-attaches {loop_file} at boot)")
    else:
        host.same(f"{unit}")
    if not host.has_systemd():
        host.warn(f"systemd is not running here, so nothing re-attaches {loop_file} at boot: "
                  f"run `losetup --find {loop_file} && vgchange --activate y {vg}` at boot "
                  f"(before the kubelet), e.g. from an init script")
        return
    if fresh:
        host.change(["systemctl", "daemon-reload"])
    if host.query(["systemctl", "is-enabled", LOOP_UNIT]).stdout.strip() != "enabled":
        host.change(["systemctl", "enable", LOOP_UNIT], f"enabled {LOOP_UNIT}")
    else:
        host.same(f"{LOOP_UNIT} is enabled")
    if host.query(["systemctl", "is-active", LOOP_UNIT]).stdout.strip() != "active":
        host.change(["systemctl", "start", LOOP_UNIT], f"started {LOOP_UNIT}")


# -- runtime: the virtual environment -----------------------------------------------------

SOURCE_FILES = ("setup.cfg", "pyproject.toml", "vol_plugin")


def source_files(source):
    files = [f for f in SOURCE_FILES if os.path.isfile(os.path.join(source, f))]
    package = os.path.join(source, "src", "slabvol")
    for dirpath, dirnames, filenames in os.walk(package):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                files.append(os.path.relpath(os.path.join(dirpath, name), source))
    return files


def check_source(source):
    missing = [f for f in ("vol_plugin", "setup.cfg", "src/slabvol/__init__.py")
               if not os.path.isfile(os.path.join(source, f))]
    if missing:
        raise InstallError(f"{source} is not a complete slabvol checkout (missing "
                           f"{', '.join(missing)}); run install.sh from the slabvol source tree")


def source_hash(source, python):
    digest = hashlib.sha256()
    digest.update(f"{os.path.realpath(python)} {sys.version}\n".encode())
    for rel in source_files(source):
        digest.update(rel.encode() + b"\0")
        with open(os.path.join(source, rel), "rb") as handle:
            digest.update(handle.read())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


IMPORT_CHECK = "import slabvol, click, psutil; print(slabvol.__version__)"


@dataclass
class Runtime:
    python: str  # the interpreter for the #! line (a host path)
    venv: Optional[str] = None  # host path of the venv, if we build one
    ready: bool = False


def plan_runtime(host, opts):
    if opts.python:
        result = host.query([opts.python, "-c", IMPORT_CHECK])
        if not result.ok:
            raise InstallError(
                f"--python {opts.python} cannot import slabvol, click and psutil "
                f"({(result.stderr.strip().splitlines() or ['?'])[-1]}); install them into it "
                f"(`{opts.python} -m pip install {opts.source}`) or leave out --python to let "
                f"install.sh build a virtual environment")
        version = result.stdout.strip()
        if version != __version__:
            host.warn(f"--python {opts.python} has slabvol {version}, this checkout is "
                      f"{__version__}; the driver will run slabvol {version}")
        return Runtime(python=opts.python, ready=True)
    name = f"{__version__}-{source_hash(opts.source, sys.executable)}"
    venv = f"{opts.prefix}/{VENVS}/{name}"
    runtime = Runtime(python=f"{venv}/bin/python", venv=venv)
    if os.path.exists(host.path(f"{venv}/{VENV_COMPLETE}")):
        check = host.query([host.path(runtime.python), "-c", IMPORT_CHECK])
        runtime.ready = check.ok and check.stdout.strip() == __version__
    return runtime


def shebang_for(python):
    line = f"#!{python}"
    if len(line) > SHEBANG_MAX:
        raise InstallError(f"the interpreter path {python} is too long for a #! line "
                           f"({len(line)} > {SHEBANG_MAX} characters); use a shorter --prefix")
    return line


def build_runtime(host, opts, runtime):
    if runtime.ready:
        host.same(f"runtime {runtime.venv or runtime.python}")
        return
    venv = runtime.venv
    if os.path.exists(host.path(venv)):
        host.remove_tree(venv, f"removed incomplete virtual environment {venv}")
    host.make_dirs(f"{opts.prefix}/{VENVS}")
    host.change([sys.executable, "-m", "venv", host.path(venv)],
                f"created virtual environment {venv} (Python {sys.version.split()[0]})")
    pip = [host.path(runtime.python), "-m", "pip", "install", "--no-input",
           "--disable-pip-version-check", "--no-cache-dir"]
    scratch = None
    try:
        if opts.wheelhouse:
            pip += ["--no-index", "--find-links", opts.wheelhouse]
        wheel = _wheel_in(opts.wheelhouse)
        if wheel:
            pip.append(f"slabvol=={__version__}")
        else:
            # Build from a scratch copy so the checkout stays clean (pip builds in-tree).
            scratch = tempfile.mkdtemp(prefix="slabvol-build-")
            copy_source(opts.source, scratch)
            pip.append(scratch)
        try:
            host.change(pip, "installed slabvol and its dependencies into it" +
                        (f" from {opts.wheelhouse}" if opts.wheelhouse else ""))
            if not host.dry_run:
                check = host.query([host.path(runtime.python), "-c", IMPORT_CHECK])
                if not check.ok or check.stdout.strip() != __version__:
                    raise InstallError(f"the new virtual environment {venv} does not import "
                                       f"slabvol {__version__}: "
                                       f"{check.stderr.strip() or check.stdout.strip()}")
        except SlabvolError as exc:
            if not host.dry_run and os.path.exists(host.path(venv)):
                shutil.rmtree(host.path(venv))
            hint = ("" if opts.wheelhouse else " If this node has no internet access, build a "
                    "wheelhouse where there is (`pip wheel -w wheelhouse /path/to/slabvol`), "
                    "copy it here and pass --wheelhouse DIR.")
            detail = exc.stderr.strip().splitlines()[-3:] if isinstance(exc, CommandError) \
                else [str(exc)]
            raise InstallError(f"could not install slabvol into {venv}: "
                               f"{' / '.join(detail)}.{hint} Nothing else was changed.") \
                from None
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    if not host.dry_run:
        with open(host.path(f"{venv}/{VENV_COMPLETE}"), "w", encoding="utf-8") as handle:
            handle.write(__version__ + "\n")


def _wheel_in(wheelhouse):
    if not wheelhouse:
        return None
    prefix = f"slabvol-{__version__}-"
    return next((n for n in sorted(os.listdir(wheelhouse))
                 if n.startswith(prefix) and n.endswith(".whl")), None)


def copy_source(source, dest):
    for rel in source_files(source) + ["README.md"]:
        src = os.path.join(source, rel)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, rel))


def remove_old_venvs(host, prefix, keep):
    base = host.path(f"{prefix}/{VENVS}")
    if not os.path.isdir(base):
        return
    for name in sorted(os.listdir(base)):
        venv = f"{prefix}/{VENVS}/{name}"
        if venv != keep:
            host.remove_tree(venv, f"removed old virtual environment {venv}")


# -- the driver executable -----------------------------------------------------------------

def render_executable(source, python):
    with open(os.path.join(source, EXECUTABLE), encoding="utf-8") as handle:
        text = handle.read()
    first, _, rest = text.partition("\n")
    if not first.startswith("#!"):
        raise InstallError(f"{source}/{EXECUTABLE} does not start with a #! line")
    return shebang_for(python) + "\n" + rest


def install_executable(host, plugin_dir, content, runtime):
    """Atomically put the driver at <plugin_dir>/ax~vol_plugin/vol_plugin.

    The new file is written next to the old one, made executable, checked with ``init``
    and only then renamed over it: the kubelet may run the driver at any moment and must
    see either the old or the new file, complete.
    """
    driver_dir = f"{plugin_dir}/{DRIVER_DIR}"
    final = f"{driver_dir}/{EXECUTABLE}"
    final_path = host.path(final)
    try:
        with open(final_path, encoding="utf-8") as handle:
            current = handle.read()
        mode = stat.S_IMODE(os.stat(final_path).st_mode)
    except (OSError, UnicodeDecodeError):
        current, mode = None, None
    if current == content and mode == 0o755:
        host.same(final)
        return final
    host.make_dirs(plugin_dir)
    host.make_dirs(driver_dir)
    host.changed(f"installed {final} (runs {runtime.python})")
    if host.dry_run:
        return final
    directory = host.path(driver_dir)
    tmp = os.path.join(directory, f".{EXECUTABLE}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o755)
        check = host.query([host.path(runtime.python) if runtime.venv else runtime.python,
                            tmp, "init"])
        try:
            status = json.loads(check.stdout).get("status")
        except (ValueError, AttributeError):
            status = None
        if status != "Success":
            raise InstallError(f"the new driver does not answer `init` correctly (exit "
                               f"{check.returncode}: "
                               f"{(check.stdout.strip() or check.stderr.strip())[:300]}); "
                               f"the installed one, if any, was left in place")
        os.replace(tmp, final_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    fsync_dir(directory)
    return final


def install_symlink(host, target):
    link = host.path(SYMLINK)
    if os.path.islink(link):
        current = os.readlink(link)
        if current == target:
            host.same(f"{SYMLINK} -> {target}")
            return
        if os.path.basename(current) != EXECUTABLE:
            host.warn(f"{SYMLINK} points at {current}, not at the driver; left alone. Run "
                      f"`{target} status` instead of `vol_plugin status`")
            return
    elif os.path.lexists(link):
        host.warn(f"{SYMLINK} exists and is not a symlink; left alone. Run `{target} status` "
                  f"instead of `vol_plugin status`")
        return
    host.changed(f"linked {SYMLINK} -> {target}")
    if host.dry_run:
        return
    tmp = f"{link}.tmp-{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, link)
    except OSError as exc:
        if os.path.lexists(tmp):
            os.remove(tmp)
        host.warn(f"could not create {SYMLINK} ({exc.strerror}); run `{target} status` "
                  f"instead of `vol_plugin status`")


# -- config ----------------------------------------------------------------------------------

def default_config_text(kubelet_dir=None):
    defaults = config_mod.Config()
    lines = ["# slabvol node configuration, read by the ax/vol_plugin driver on every call.",
             "# Written by install.sh with every key at its default, commented out;",
             "# uncomment and change what you need. install.sh never overwrites this file.",
             "# Reference: docs/operations.md.", "", f"[{config_mod.SECTION}]"]
    for f in fields(config_mod.Config):
        if f.name == "path":
            continue
        value = getattr(defaults, f.name)
        text = f"{value:g}" if isinstance(value, float) else str(value)
        lines.append("")
        for chunk in _wrap(CONFIG_HELP[f.name]):
            lines.append(f"# {chunk}")
        if f.name == "kubelet_dir" and kubelet_dir and kubelet_dir != value:
            lines.append("# (set by install.sh: the running kubelet's --root-dir)")
            lines.append(f"{f.name} = {kubelet_dir}")
        else:
            lines.append(f"# {f.name} = {text}".rstrip())
    return "\n".join(lines) + "\n"


def _wrap(text, width=88):
    words, line, out = text.split(), "", []
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        out.append(line)
    return out


def read_config(host):
    path = host.path(config_mod.DEFAULT_PATH)
    try:
        return config_mod.load(path)
    except SlabvolError as exc:
        raise InstallError(f"{exc} (install.sh reads it for the volume group name)") from None


def install_config(host, kubelet):
    path = config_mod.DEFAULT_PATH
    if os.path.lexists(host.path(path)):
        host.same(f"{path} exists, not touched")
        return
    host.changed(f"wrote default config {path}")
    if host.dry_run:
        return
    text = default_config_text(kubelet.root_dir)
    directory = os.path.dirname(host.path(path))
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".slabvol.conf.tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.link(tmp, host.path(path))  # fails if one appeared meanwhile: never overwrite
    finally:
        os.remove(tmp)


# -- the manifest ------------------------------------------------------------------------------

def read_manifest(host, prefix):
    text = host.read_text(f"{prefix}/{MANIFEST}")
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        host.warn(f"{prefix}/{MANIFEST} is not valid JSON; ignoring it")
        return {}
    return data if isinstance(data, dict) else {}


def write_manifest(host, prefix, data):
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    if host.read_text(f"{prefix}/{MANIFEST}") == text:
        host.same(f"{prefix}/{MANIFEST}")
        return
    host.write_file(f"{prefix}/{MANIFEST}", text,
                    what=f"recorded the installation in {prefix}/{MANIFEST}")


# -- install ------------------------------------------------------------------------------------

def install(host, opts, kubelet):
    host.say(f"slabvol {__version__}: installing {DRIVER_NAME}"
             + (f" (root {host.root})" if host.root != "/" else "")
             + (" -- dry run, nothing will change" if host.dry_run else ""))
    check_source(opts.source)
    config = read_config(host)
    runtime = plan_runtime(host, opts)
    check_prerequisites(host, opts, need_venv=not runtime.ready)
    plugin_dir, why = resolve_plugin_dir(host, opts, kubelet)
    check_writable(host, plugin_dir)
    content = render_executable(opts.source, runtime.python)
    if kubelet.root_dir and os.path.lexists(host.path(config_mod.DEFAULT_PATH)) \
            and kubelet.root_dir != config.kubelet_dir:
        host.warn(f"the kubelet runs with --root-dir {kubelet.root_dir} but "
                  f"{config.path} has kubelet_dir = {config.kubelet_dir}; every mount will be "
                  f"refused until kubelet_dir matches")
    vg_plan = plan_volume_group(host, opts, config.volume_group)
    host.say(f"plugin dir: {plugin_dir} ({why})")

    host.say("runtime:")
    build_runtime(host, opts, runtime)
    host.say(f"volume group {config.volume_group}:")
    apply_volume_group(host, opts, vg_plan)
    host.say("config:")
    install_config(host, kubelet)
    host.say("driver:")
    executable = install_executable(host, plugin_dir, content, runtime)
    install_symlink(host, executable)
    if runtime.venv:
        remove_old_venvs(host, opts.prefix, runtime.venv)
    previous = read_manifest(host, opts.prefix)
    loop_file = vg_plan.loop_file or previous.get("loopback_file")
    manifest = {"version": __version__, "plugin_dir": plugin_dir, "executable": executable,
                "python": runtime.python, "venv": runtime.venv, "symlink": SYMLINK,
                "volume_group": config.volume_group, "loopback_file": loop_file,
                "loopback_unit": f"{UNIT_DIR}/{LOOP_UNIT}" if loop_file else None}
    write_manifest(host, opts.prefix, manifest)

    host.say("")
    if not host.changes:
        host.say("Nothing changed: slabvol is installed and up to date.")
    else:
        host.say(f"{'Would make' if host.dry_run else 'Made'} {len(host.changes)} change(s).")
    host.say(f"""
Next:
  vol_plugin status     # the volume group and its slabs ({executable} status)
  The kubelet (1.8 and later) finds new and upgraded FlexVolume drivers by itself within
  seconds. If pods report 'no volume plugin matched' for {DRIVER_NAME}, restart it:
  systemctl restart kubelet (k3s: systemctl restart k3s or k3s-agent).
  Log: {config.log_file}. Reference: docs/operations.md.""")
    return 0


# -- uninstall ------------------------------------------------------------------------------------

def _slab_report(host, vg):
    """(slab LVs, other LVs, mounted slab names) of the volume group, or None if it is absent."""
    from .lvm import Lvm, VgNotFound
    from .mounts import MountTable

    try:
        _, lvs = Lvm(host.runner, vg).report()
    except VgNotFound:
        return None
    try:
        table = MountTable.read(host.path("/proc/self/mountinfo"))
    except OSError:
        table = MountTable([])
    slabs = [lv for lv in lvs if any(t.startswith(LVM_TAG_PREFIX) for t in lv.tags)]
    others = [lv for lv in lvs if lv not in slabs]
    mounted = [lv.name for lv in slabs
               if lv.major is not None and table.of_device((lv.major, lv.minor))]
    return slabs, others, mounted


def uninstall(host, opts, kubelet):
    host.say(f"slabvol {__version__}: {'purging' if opts.purge else 'uninstalling'} "
             f"{DRIVER_NAME}" + (f" (root {host.root})" if host.root != "/" else "")
             + (" -- dry run, nothing will change" if host.dry_run else ""))
    manifest = read_manifest(host, opts.prefix)
    try:
        config = config_mod.load(host.path(config_mod.DEFAULT_PATH))
    except SlabvolError as exc:
        if opts.purge:
            raise InstallError(f"{exc}; --purge needs the volume group name from it") from None
        host.warn(f"{exc}; using the default volume group name")
        config = config_mod.Config()
    vg = config.volume_group if os.path.exists(host.path(config_mod.DEFAULT_PATH)) \
        else manifest.get("volume_group") or config.volume_group
    plugin_dir = opts.plugin_dir or manifest.get("plugin_dir") \
        or resolve_plugin_dir(host, opts, kubelet)[0]
    executable = f"{plugin_dir}/{DRIVER_DIR}/{EXECUTABLE}"

    try:
        report = _slab_report(host, vg)
    except (SlabvolError, OSError) as exc:
        if opts.purge:
            raise InstallError(f"cannot read volume group {vg}: {exc}; nothing was "
                               f"removed") from None
        host.warn(f"cannot read volume group {vg} ({exc}); not checking for mounted slabs")
        report = None
    if report and report[2]:
        names = ", ".join(report[2])
        if opts.purge:
            raise InstallError(f"slabs {names} are mounted (pods are using them); --purge "
                               f"removes no slab in use. Delete those pods or drain the node, "
                               f"then run again. Nothing was removed")
        if not opts.force:
            raise InstallError(f"slabs {names} are mounted: without the driver the kubelet "
                               f"cannot unmount them when their pods end. Delete those pods "
                               f"or drain the node first, or pass --force. Nothing was "
                               f"removed")
        host.warn(f"--force: slabs {names} stay mounted; their pods will hang in "
                  f"Terminating until the driver is back")

    host.say("driver:")
    if not host.remove_file(executable, f"removed {executable}"):
        host.same(f"{executable} is not there")
    host.remove_empty_dir(f"{plugin_dir}/{DRIVER_DIR}")
    link = host.path(SYMLINK)
    if os.path.islink(link) and os.readlink(link) == executable:
        host.remove_file(SYMLINK, f"removed {SYMLINK}")

    host.say("runtime:")
    if not host.remove_tree(f"{opts.prefix}/{VENVS}",
                            f"removed the virtual environments in {opts.prefix}/{VENVS}"):
        host.same(f"no virtual environment in {opts.prefix}")
    host.remove_file(f"{opts.prefix}/{MANIFEST}")
    host.remove_empty_dir(opts.prefix)

    problems = []
    loop_file = manifest.get("loopback_file") or _unit_loop_file(host)
    if opts.purge:
        host.say(f"volume group {vg}:")
        problems += _purge_volume_group(host, vg, report, loop_file)
        host.say("config:")
        if problems:  # the config names the volume group the next --purge must find
            host.same(f"{config_mod.DEFAULT_PATH} kept until the purge can finish")
        else:
            host.remove_file(config_mod.DEFAULT_PATH)
            host.remove_empty_dir(os.path.dirname(config_mod.DEFAULT_PATH))
    host.say("")
    if problems:
        for problem in problems:
            host.warn(problem)
        raise InstallError("the purge is incomplete (see the warnings above); the driver and "
                           "the runtime are removed. Deal with what is left, then run "
                           "./install.sh --uninstall --purge again")
    host.say(f"{'Would make' if host.dry_run else 'Made'} {len(host.changes)} change(s).")
    if not opts.purge:
        kept = [f"the config {config_mod.DEFAULT_PATH}"]
        if report is not None:
            kept.insert(0, f"volume group {vg} with {len(report[0])} slab(s)")
        if loop_file:
            kept.append(f"the loop file {loop_file} and {LOOP_UNIT}")
        host.say("Kept " + ", ".join(kept) + ". To remove them as well: "
                 "./install.sh --uninstall --purge")
    return 0


def _unit_loop_file(host):
    text = host.read_text(f"{UNIT_DIR}/{LOOP_UNIT}") or ""
    match = re.search(r"^# slabvol-loopback-file: (\S+)$", text, re.MULTILINE)
    return match.group(1) if match else None


def _purge_volume_group(host, vg, report, loop_file):
    problems = []
    if report is None:
        host.same(f"no volume group {vg}")
    else:
        slabs, others, _ = report
        for lv in slabs:
            host.change(["lvremove", "--yes", f"{vg}/{lv.name}"], f"removed slab {vg}/{lv.name}")
        if others:
            problems.append(f"volume group {vg} also holds logical volumes that are not slabs "
                            f"({', '.join(lv.name for lv in others)}); it was kept, and so "
                            f"were its disk and loop file")
            return problems
        pvs = [name for name, owner in list_pvs(host) if owner == vg]
        host.change(["vgremove", vg], f"removed volume group {vg}")
        for pv in pvs:
            host.change(["pvremove", pv], f"removed the LVM label from {pv}")
    if host.has_systemd() and os.path.exists(host.path(f"{UNIT_DIR}/{LOOP_UNIT}")):
        host.change(["systemctl", "disable", LOOP_UNIT], f"disabled {LOOP_UNIT}")
    if host.remove_file(f"{UNIT_DIR}/{LOOP_UNIT}") and host.has_systemd():
        host.change(["systemctl", "daemon-reload"])
    if loop_file:
        for loop in loops_of(host, loop_file):
            host.change(["losetup", "--detach", loop], f"detached {loop}")
        if host.remove_file(loop_file, f"removed the loop file {loop_file}"):
            host.remove_empty_dir(os.path.dirname(loop_file))
    return problems


# -- entry points ----------------------------------------------------------------------------------

def main(argv=None, *, runner=None, processes=None, which=None, stdout=None, stderr=None,
         environ=None):
    """Run install.sh's logic; returns the exit code (0 ok, 1 failed, 2 bad usage)."""
    err = stderr or sys.stderr
    try:
        try:
            opts = parse_args(list(sys.argv[1:] if argv is None else argv), environ)
        except SystemExit as exc:  # --help, --version
            return exc.code or 0
        host = Host(opts.root, runner=runner, dry_run=opts.dry_run, which=which,
                    processes=processes, out=stdout, err=err)
        if host.root == "/" and not opts.dry_run and os.geteuid() != 0:
            raise InstallError("install.sh changes system dirs and LVM: run it as root "
                               "(sudo ./install.sh ...), or try --dry-run first")
        kubelet = detect_kubelet(host)
        if opts.uninstall:
            return uninstall(host, opts, kubelet)
        return install(host, opts, kubelet)
    except UsageError as exc:
        print(f"install.sh: error: {exc}", file=err)
        return 2
    except (SlabvolError, ToolMissing) as exc:
        print(f"install.sh: error: {exc}", file=err)
        return 1
    except OSError as exc:
        print(f"install.sh: error: {exc}; nothing after this step was done. Fix the cause "
              f"and run install.sh again (it picks up where it stopped)", file=err)
        return 1


def run():
    return main()


if __name__ == "__main__":
    sys.exit(run())
