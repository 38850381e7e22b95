"""install.sh's command line: the options, their defaults and their checks."""

import argparse
import os
import re
import shutil

from .. import DRIVER_NAME, __version__
from .host import UsageError
from .layout import (DEFAULT_LOOP_FILE, DEFAULT_LOOP_SIZE, DEFAULT_NFD_FEATURES_FILE,
                     DEFAULT_PREFIX, KNOWN_PLUGIN_DIRS, LOOP_UNIT, MIN_LOOP_SIZE, ROOT_ENV)


EPILOG = """\
examples:
  sudo ./install.sh --disk /dev/xvdz          # a dedicated, empty disk becomes the VG
  sudo ./install.sh --loopback --size 20G     # no spare disk: a sparse file on a loop device
  sudo ./install.sh                           # upgrade the driver, keep the existing VG
  sudo ./install.sh --nfd                     # ... and publish warm caches as node labels
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
    sched = p.add_argument_group("scheduling")
    sched.add_argument("--nfd", nargs="?", const=DEFAULT_NFD_FEATURES_FILE, metavar="FILE",
                       help=f"publish this node's room and warm caches as node labels through "
                            f"Node Feature Discovery: set nfd_features_file = FILE in the "
                            f"config (added to an existing config if it has no such line) "
                            f"and create FILE's dir (default FILE: "
                            f"{DEFAULT_NFD_FEATURES_FILE})")
    rm = p.add_argument_group("removal")
    rm.add_argument("--uninstall", action="store_true",
                    help="remove the driver, the symlink, the runtime and the NFD feature "
                         "file; keep the config, the volume group and its slabs")
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
SHEBANG = "ends up in a #! line or a systemd unit"


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


def _check_path(option, value, *, safe=""):
    """``value`` normalised; ``safe``: where it ends up, when only ._+/@:- may be in it."""
    if not os.path.isabs(value):
        raise UsageError(f"{option} {value!r} must be an absolute path")
    if safe and not _SAFE_PATH.fullmatch(value):
        raise UsageError(f"{option} {value!r} may only contain letters, digits and "
                         f"._+/@:- (it {safe})")
    return os.path.normpath(value)


def parse_args(argv, environ=None):
    """The parsed options, checked and normalised (paths absolute, --size in bytes)."""
    environ = os.environ if environ is None else environ
    o = build_parser().parse_args(argv)
    # without --source: the checkout this file is in (src/slabvol/install/ -> the repo root)
    o.source = os.path.abspath(o.source or os.path.join(os.path.dirname(__file__), "../../.."))
    o.root = os.path.abspath(o.root or environ.get(ROOT_ENV) or "/")
    o.prefix = _check_path("--prefix", o.prefix, safe=SHEBANG)
    if o.prefix == "/":
        raise UsageError("--prefix / would put the runtime into the root dir; use a dir of "
                         "its own such as /opt/slabvol")
    if o.plugin_dir:
        o.plugin_dir = _check_path("--plugin-dir", o.plugin_dir)
    if not os.path.isdir(o.root):
        raise UsageError(f"--root {o.root} is not a directory")
    if o.purge and not o.uninstall:
        raise UsageError("--purge deletes every slab and the volume group; it only works "
                         "together with --uninstall (./install.sh --uninstall --purge)")
    if o.uninstall:
        used = [flag for flag, value in (("--disk", o.disk), ("--loopback", o.loopback),
                                         ("--size", o.size), ("--python", o.python),
                                         ("--wheelhouse", o.wheelhouse),
                                         ("--skip-vg", o.skip_vg), ("--nfd", o.nfd))
                if value]
        if used:
            raise UsageError(f"{', '.join(used)} cannot be combined with --uninstall")
        return o
    chosen = [flag for flag, value in (("--disk", o.disk), ("--loopback", o.loopback),
                                       ("--skip-vg", o.skip_vg)) if value]
    if len(chosen) > 1:
        raise UsageError(f"choose one of {' and '.join(chosen)}")
    if o.size and not o.loopback:
        raise UsageError("--size is the size of a --loopback file; it needs --loopback")
    if o.disk:
        text, o.disk = o.disk, _check_path("--disk", o.disk)
        if not o.disk.startswith("/dev/"):
            raise UsageError(f"--disk {text!r} is not a device path under /dev/ "
                             f"(list the disks with `lsblk`)")
    o.size_given = bool(o.size)
    if o.loopback:
        o.loopback = _check_path("--loopback", o.loopback, safe=SHEBANG)
        text, o.size = o.size, parse_size(o.size or DEFAULT_LOOP_SIZE)
        if o.size < MIN_LOOP_SIZE:
            raise UsageError(f"--size {text} is too small; a loopback volume group needs "
                             f"at least {human_size(MIN_LOOP_SIZE)}")
    if o.nfd:
        text, o.nfd = o.nfd, _check_path("--nfd", o.nfd, safe="is written into slabvol.conf")
        if os.path.basename(o.nfd).startswith(".") or o.nfd == "/":
            raise UsageError(f"--nfd {text!r}: nfd-worker skips dot-files (and needs a file "
                             f"name); use e.g. {DEFAULT_NFD_FEATURES_FILE}")
    if o.python and o.wheelhouse:
        raise UsageError("--wheelhouse is for building the virtual environment; with "
                         "--python no environment is built")
    if o.python:
        found = shutil.which(o.python)
        if not found:
            raise UsageError(f"--python {o.python}: no such executable")
        o.python = _check_path("--python", os.path.abspath(found),
                               safe="becomes the #! line of the driver")
    if o.wheelhouse:
        if not os.path.isdir(o.wheelhouse):
            raise UsageError(f"--wheelhouse {o.wheelhouse}: no such directory")
        o.wheelhouse = os.path.abspath(o.wheelhouse)
    return o
