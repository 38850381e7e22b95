"""Which package provides each program slabvol runs, per distribution family: one table for
the driver's "not installed" message and the installer's prerequisite check."""

import sys

from .filesystems import FILESYSTEMS

LVM_TOOLS = ("lvm", "lvmconfig", "pvs", "vgs", "lvs", "pvcreate", "vgcreate", "vgchange",
             "lvcreate", "lvchange", "lvremove")

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

TOOLS = {  # program -> package key
    **{tool: "lvm2" for tool in LVM_TOOLS},
    **{fs.mkfs[0]: fs.package for fs in FILESYSTEMS.values()},
    "mount": "mount", "umount": "mount",
    **{tool: "util-linux" for tool in ("flock", "wipefs", "lsblk", "losetup")},
}


def package_of(tool, family="debian"):
    """The package that provides ``tool`` on ``family``, or None when the table lacks it."""
    key = TOOLS.get(tool)
    return PACKAGES[key][family] if key else None
