"""A slab's bookkeeping, kept on the volume group itself as LVM tags.

Every slab is a logical volume carrying tags ``slabvol.<key>=<value>``. LVs without a
``slabvol.`` tag belong to someone else and are never touched. Tag values are encoded
so that any text fits LVM's tag alphabet (``A-Za-z0-9_+.-/=!:#&``): every byte outside
``A-Za-z0-9_+.-/:`` becomes ``&XX`` (two lower-case hex digits of its UTF-8 bytes).
"""

import re
from collections import namedtuple

from .lvm import LogicalVolume

PREFIX = "slabvol."
SCHEMA_VERSION = "1"

# States. A slab is "in-use" from the moment it is claimed for a mount dir until it is
# released; "creating" covers lvcreate..mkfs (a crash there leaves a slab gc removes);
# "retired" is a slab that must go but could not be removed yet (something outside the
# driver still holds it open): never handed out, removed by the next mount or gc that
# finds it no longer held.
CREATING = "creating"
IN_USE = "in-use"
FREE = "free"
RETIRED = "retired"
STATES = (CREATING, IN_USE, FREE, RETIRED)

# Types.
GRAPH = "ax-docker-graph-storage"
ANONYMOUS = "ax-anonymous"
TYPES = (GRAPH, ANONYMOUS)

# Tag keys, one per field of Slab.
KEYS = {
    "state": "state", "size_mb": "size_mb", "fs_type": "fs", "type": "type",
    "namespace": "ns", "pod_uid": "pod", "mount_dir": "dir", "cache_key": "key",
    "last_used": "last_used", "use_count": "uses",
}
INT_FIELDS = ("size_mb", "last_used", "use_count")

_PLAIN = re.compile(r"[A-Za-z0-9_+.\-/:]")
_ESCAPE = re.compile(r"&([0-9a-fA-F]{2})")


def encode(value):
    out = []
    for char in str(value):
        if _PLAIN.fullmatch(char):
            out.append(char)
        else:
            out.extend(f"&{byte:02x}" for byte in char.encode("utf-8"))
    return "".join(out)


def decode(text):
    raw = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(text):
        raw += text[pos:match.start()].encode("utf-8")
        raw.append(int(match.group(1), 16))
        pos = match.end()
    raw += text[pos:].encode("utf-8")
    return raw.decode("utf-8", errors="replace")


def make_tag(key, value):
    return f"{PREFIX}{key}={encode(value)}"


# What a slab is: the LV's facts, then the decoded slabvol tags. ``open``: the device is
# open (mounted in any mount namespace, or held); ``raw_tags``: the tags as LVM has them,
# by key, which the slab is retagged from (not part of its value: equality and hash leave it
# out). None where a number is unknown.
_FIELDS = ("lv_name lv_path size_bytes active major minor open state size_mb fs_type type "
           "namespace pod_uid mount_dir cache_key last_used use_count raw_tags")
_DEFAULTS = (True, None, None, False, "", None, "", GRAPH, "", "", "", "", None, 0, None)


class Slab(namedtuple("Slab", _FIELDS, defaults=_DEFAULTS)):
    __slots__ = ()

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls, *args, **kwargs)
        return self if self.raw_tags is not None else self._replace(raw_tags={})

    def __eq__(self, other):
        return isinstance(other, Slab) and self[:-1] == other[:-1]

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash(self[:-1])

    def __repr__(self):
        return "Slab(" + ", ".join(f"{name}={value!r}" for name, value
                                   in zip(self._fields[:-1], self[:-1])) + ")"

    @property
    def anonymous(self):
        return self.type == ANONYMOUS

    @property
    def device(self):
        if self.major is None or self.minor is None:
            return None
        return (self.major, self.minor)

    @classmethod
    def from_lv(cls, lv):
        """The slab an LV holds, or None when the LV is not a slab of ours."""
        raw = {}
        for tag in lv.tags:
            if tag.startswith(PREFIX) and "=" in tag:
                raw[tag[len(PREFIX):].split("=", 1)[0]] = tag
        if "state" not in raw:
            return None
        values = {}
        for name, key in KEYS.items():
            if key in raw:
                text = decode(raw[key].split("=", 1)[1])
                if name in INT_FIELDS:
                    try:
                        text = int(text)
                    except ValueError:
                        continue
                values[name] = text
        return cls(lv_name=lv.name, lv_path=lv.path, size_bytes=lv.size, active=lv.active,
                   major=lv.major, minor=lv.minor, open=lv.open, raw_tags=raw, **values)


def new_tags(**fields):
    """The tags a new slab is created with."""
    tags = [make_tag("v", SCHEMA_VERSION)]
    for name, value in fields.items():
        if value not in (None, ""):
            tags.append(make_tag(KEYS[name], value))
    return tags


def retagged(slab, **changes):
    """(tags to delete, tags to add, the slab as it is once LVM has made that change)."""
    delete, add = retag(slab, **changes)
    tags = tuple(t for t in slab.raw_tags.values() if t not in delete) + tuple(add)
    return delete, add, Slab.from_lv(LogicalVolume(
        slab.lv_name, slab.lv_path, slab.size_bytes, tags, slab.active, slab.major,
        slab.minor, slab.open))


def retag(slab, **changes):
    """(tags to delete, tags to add) that move ``slab`` to the changed field values.

    A value of None or "" removes the field. Unchanged fields produce no tag work.
    """
    delete, add = [], []
    for name, value in changes.items():
        key = KEYS[name]
        old = slab.raw_tags.get(key)
        new = None if value in (None, "") else make_tag(key, value)
        if old == new:
            continue
        if old is not None:
            delete.append(old)
        if new is not None:
            add.append(new)
    return delete, add
