"""The kernel's mount table (the truth for what is mounted where) and filesystem usage."""

import os
import re
from collections import namedtuple

MOUNTINFO = "/proc/self/mountinfo"
_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(text):
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), text)


Mount = namedtuple("Mount", "device mountpoint fs_type source")  # device: (major, minor)


def parse_mountinfo(text):
    """Parse /proc/<pid>/mountinfo (proc(5)): one Mount per well-formed line."""
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            major, minor = fields[2].split(":")
            mounts.append(Mount((int(major), int(minor)), _unescape(fields[4]),
                                fields[sep + 1], _unescape(fields[sep + 2])))
        except (ValueError, IndexError):
            continue
    return mounts


class MountTable:
    def __init__(self, mounts):
        self.mounts = list(mounts)

    @classmethod
    def read(cls, path=MOUNTINFO):
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            return cls(parse_mountinfo(handle.read()))

    def at(self, mountpoint):
        """The mount on top at ``mountpoint`` (the last one listed wins), if any."""
        found = None
        for mount in self.mounts:
            if mount.mountpoint == mountpoint:
                found = mount
        return found

    def of_device(self, device):
        return [m for m in self.mounts if device is not None and m.device == device]


def used_percent(path):
    """Used space of the filesystem at ``path`` as df computes it, or None if unreadable."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    used = st.f_blocks - st.f_bfree
    total = used + st.f_bavail
    if total <= 0:
        return None
    return round(100.0 * used / total, 1)
