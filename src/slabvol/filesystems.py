"""The filesystems a slab can carry: one table for the option check, mkfs and the tools.

A slab is a cache: mkfs must return at once and reserve nothing. Both support overlay2
(xfs only with ftype=1, which mkfs.xfs sets by default since xfsprogs 3.2.3; given here
explicitly)."""

from collections import namedtuple

# mkfs: argv before the device; package: what provides mkfs; min_mb: the smallest slab mkfs
# accepts.
Filesystem = namedtuple("Filesystem", "name mkfs package min_mb", defaults=(1,))


FILESYSTEMS = {
    # lazy inode tables and journal: mkfs returns at once; -m 0: no reserved blocks.
    "ext4": Filesystem("ext4", ("mkfs.ext4", "-q", "-F", "-m", "0", "-E",
                                "lazy_itable_init=1,lazy_journal_init=1"), "e2fsprogs"),
    # mkfs.xfs refuses filesystems under 300 MiB (xfsprogs 5.x; tests/fixtures/lvm).
    "xfs": Filesystem("xfs", ("mkfs.xfs", "-q", "-f", "-n", "ftype=1"), "xfsprogs",
                      min_mb=300),
}
DEFAULT = "ext4"
NAMES = tuple(FILESYSTEMS)


def mkfs_argv(fs_type, device):
    return [*FILESYSTEMS[fs_type or DEFAULT].mkfs, device]
