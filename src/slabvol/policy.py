"""The slab policy, as pure functions: no I/O, no LVM, no clock.

Read this module as the specification of which slab a pod gets, what is evicted to
make room, what happens to a slab when its pod is done, and what ``gc`` repairs.
"""

import re
from collections import namedtuple

from . import slab as S

MIB = 1024 * 1024
SCOPE_NAMESPACE = "namespace"
SCOPE_NODE = "node"
SCOPES = (SCOPE_NAMESPACE, SCOPE_NODE)


# A pod's identity as the kubelet states it: its namespace, a DNS-1123 label, and its UID,
# a UUID from the API server or, for a static pod, the 32 hex digits of the manifest's MD5
# (kubelet pkg/kubelet/config/common.go).
NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
POD_UID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}")
# A cache_key (the pod's own option): printable ASCII without spaces.
CACHE_KEY = re.compile(r"[\x21-\x7e]{1,200}")


class Request(namedtuple("Request", "size_mb fs_type type namespace cache_key pod_uid",
                         defaults=("ext4", S.GRAPH, "", "", ""))):
    """What a pod asked for (already validated)."""

    __slots__ = ()

    @property
    def anonymous(self):
        return self.type == S.ANONYMOUS


# The plans plan_mount returns.
Reuse = namedtuple("Reuse", "slab")
Create = namedtuple("Create", "size_bytes evict", defaults=((),))  # evict: slabs, first
Refuse = namedtuple("Refuse", "message")


def lv_bytes(size_mb, extent_size):
    """The LV size LVM will allocate for ``size_mb``: rounded up to whole extents."""
    wanted = size_mb * MIB
    extents = -(-wanted // extent_size)
    return extents * extent_size


def _mib(nbytes):
    return nbytes // MIB


def in_scope(slab, request, scope):
    """May ``request``'s pod see what ``slab``'s last user left in it?"""
    return scope == SCOPE_NODE or slab.namespace == request.namespace


def reusable(slab, request, scope, busy):
    """A free graph slab of exactly the requested size and fs, in scope, mounted nowhere."""
    return (slab.state == S.FREE and not slab.anonymous and not request.anonymous
            and slab.size_mb == request.size_mb and slab.fs_type == request.fs_type
            and in_scope(slab, request, scope) and slab.lv_name not in busy)


def evictable(slab, busy):
    return slab.state == S.FREE and slab.lv_name not in busy


def lru_key(slab):
    return (slab.last_used or 0, slab.lv_name)


def plan_mount(request, vg, slabs, busy=frozenset(), scope=SCOPE_NAMESPACE):
    """Decide how to serve ``request``.

    ``vg`` is the VolumeGroup (bytes), ``slabs`` every slab in it, ``busy`` the names of
    slabs that must not be touched: open anywhere (mounted in any mount namespace, or held
    by any process), and any the caller could not remove a moment ago. A cache kept for a
    repository's key is worth more than a new slab's room, so:

    A request with a cache_key:

    1. Reuse a ``reusable`` slab last used with the same key, the most recently used.
    2. Else create one, if the VG's free space holds it: other keys' warm slabs are kept.
    3. Else reuse the least recently used ``reusable`` slab of another key (or of none).
    4. Else make room (``plan_room``): evict free slabs, least recently used first.

    A request without a cache_key:

    1. Reuse a ``reusable`` slab, one nobody asked for by key first, then the most recently
       used.
    2. Else ``plan_room``.

    An anonymous request never reuses: ``plan_room``.
    """
    candidates = ([] if request.anonymous else
                  [s for s in slabs if reusable(s, request, scope, busy)])
    if not request.cache_key:
        if candidates:
            return Reuse(max(candidates, key=lambda s: (not s.cache_key, lru_key(s))))
        return plan_room(request, vg, slabs, busy)

    own = [s for s in candidates if s.cache_key == request.cache_key]
    if own:
        return Reuse(max(own, key=lru_key))
    room = plan_room(request, vg, slabs, busy)
    if isinstance(room, Create) and not room.evict:
        return room
    if candidates:
        return Reuse(min(candidates, key=lru_key))
    return room


def plan_room(request, vg, slabs, busy=frozenset()):
    """A new slab for ``request``: Create it in free space; else evict free slabs (mounted
    nowhere), least recently used first, only as many as needed and only if that actually
    makes room, never a slab in use; else Refuse, saying how much was asked, is free, and is
    held by slabs in use."""
    need = lv_bytes(request.size_mb, vg.extent_size)
    if need > vg.size:
        return Refuse(f"size_mb={request.size_mb} is larger than the whole volume group "
                      f"{vg.name!r} ({_mib(vg.size)} MiB); ask for less")
    if need <= vg.free:
        return Create(need)

    room, evict = vg.free, []
    for victim in sorted((s for s in slabs if evictable(s, busy)), key=lru_key):
        if room >= need:
            break
        evict.append(victim)
        room += victim.size_bytes
    if room >= need:
        return Create(need, tuple(evict))

    in_use = sum(s.size_bytes for s in slabs if s.state != S.FREE)
    return Refuse(
        f"no room for a {request.size_mb} MiB slab in volume group {vg.name!r}: "
        f"{_mib(vg.free)} MiB free, {_mib(in_use)} MiB held by slabs in use, in transition "
        f"or retired, "
        f"{_mib(room - vg.free)} MiB in free slabs that could be evicted; the kubelet retries "
        f"when a pod releases its slab (or grow the VG, or ask for less)")


def plan_mount_recent(request, vg, slabs, busy=frozenset(), scope=SCOPE_NAMESPACE):
    """The policy of slabvol 0.1, kept as the baseline the benchmarks compare against (the
    driver does not use it): reuse the ``reusable`` slab with the same cache_key, else the
    most recently used one of any key, before ``plan_room``. It hands a keyed request
    another key's warm cache even while the VG has room for a new slab."""
    if not request.anonymous:
        candidates = [s for s in slabs if reusable(s, request, scope, busy)]
        if candidates:
            return Reuse(max(candidates, key=lambda s: (
                bool(request.cache_key) and s.cache_key == request.cache_key, lru_key(s))))
    return plan_room(request, vg, slabs, busy)


# What happens to a slab when its pod is done.
REMOVE = "remove"
KEEP = "free"


def plan_release(slab, used_percent, prune_used_percent):
    """(REMOVE or KEEP, reason) for a slab whose pod has unmounted it (``used_percent``: how
    full its filesystem is, None when unknown).

    A slab to REMOVE that LVM will not remove (something outside the driver still holds it
    open) is retired instead, never returned to the pool: see ``plan_repair``."""
    if slab.anonymous:
        return REMOVE, "anonymous slab: never reused"
    if used_percent is None:
        return KEEP, "usage could not be read: kept rather than risk deleting a good cache"
    if used_percent > prune_used_percent:
        return REMOVE, (f"pruned: {used_percent:.1f}% used is above "
                        f"prune_used_percent={prune_used_percent}")
    return KEEP, f"{used_percent:.1f}% used"


# What gc repairs.
Repair = namedtuple("Repair", "action slab reason")  # action: REMOVE or KEEP (to the pool)


def plan_repair(slabs, busy, live_dirs):
    """Repairs after crashes and reboots.

    ``busy``: names of slabs open anywhere; ``live_dirs``: the mount dirs of in-use
    slabs that still exist. Must only be called under the node lock, so no other slabvol
    operation is mid-flight and every transitional state belongs to a dead process.
    Each repair stands alone: the caller applies them one by one and goes on past one that
    fails.
    """
    repairs = []
    for s in slabs:
        if s.lv_name in busy:
            continue  # open: in use by something, never touched
        if s.state == S.CREATING:
            repairs.append(Repair(REMOVE, s, "half-created by an interrupted mount"))
        elif s.state == S.RETIRED:
            repairs.append(Repair(REMOVE, s, "retired slab that nothing holds any more"))
        elif s.state == S.FREE and s.anonymous:
            repairs.append(Repair(REMOVE, s, "anonymous slab left free: never reused"))
        elif s.state == S.IN_USE and s.mount_dir not in live_dirs:
            if s.anonymous:
                repairs.append(Repair(REMOVE, s, "anonymous slab of a pod that is gone"))
            else:
                repairs.append(Repair(KEEP, s, f"pod dir {s.mount_dir} is gone and the slab "
                                                "is not mounted: returned to the pool"))
    return repairs
