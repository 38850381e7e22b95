"""Prerequisites: which tools are missing, and the command that installs them on this
distribution."""

import sys

from ..packages import LVM_TOOLS, PACKAGES, TOOLS
from .host import InstallError
from .layout import MIN_PYTHON


INSTALL_COMMAND = {"debian": "apt-get install -y", "rhel": "dnf install -y",
                   "suse": "zypper install -y", "alpine": "apk add"}


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
    def command(family):
        names = " ".join(dict.fromkeys(PACKAGES[key][family] for key in package_keys))
        return f"`{INSTALL_COMMAND[family]} {names}`"
    family = distro_family(host)
    if family:
        return command(family)
    return f"{command('debian')} (Debian, Ubuntu) or {command('rhel')} (RHEL, Fedora)"


def check_prerequisites(host, opts, need_venv):
    """Raise InstallError naming every missing tool and the command that installs it."""
    if sys.version_info < MIN_PYTHON:
        raise InstallError(f"Python {'.'.join(map(str, MIN_PYTHON))} or newer is needed, "
                           f"this is {sys.version.split()[0]} ({sys.executable}); install a "
                           f"newer python3 and run install.sh again")
    tools = [*LVM_TOOLS, "mkfs.ext4", "mount", "umount", "flock"]
    if opts.disk or opts.loopback:
        tools += ["wipefs", "lsblk" if opts.disk else "losetup"]
    absent = [tool for tool in tools if not host.which(tool)]
    keys = list(dict.fromkeys(TOOLS[tool] for tool in absent))  # in the order of ``tools``
    missing = [", ".join(t for t in absent if TOOLS[t] == key) for key in keys]
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
