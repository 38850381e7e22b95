"""What a node tells the scheduler about its slabs, as pure functions: no I/O, no clock.

A node publishes its warm caches and its room as Node Feature Discovery (NFD) feature
lines, ``name=value``, in a file under ``/etc/kubernetes/node-feature-discovery/features.d/``;
NFD's ``local`` source turns each line into a node label, and a CI pod asks for a warm node
with the ``affinity`` computed here from the same hashes.

The labels (all in the ``slabvol.io/`` prefix; NFD prefixes a name without one with
``feature.node.kubernetes.io/``, and its docs say not to rely on that):

``slabvol.io/room-mib=<MiB>``
    Room a new slab could get now: the VG's free space plus every free slab open nowhere
    (what eviction could free), in whole MiB. Always a multiple of the extent size in bytes,
    so a slab of S MiB fits exactly when ``room-mib >= S``. A node that holds a reusable slab
    of S MiB always shows at least S (that slab is evictable), so a pod that requires room
    never misses a warm node.
``slabvol.io/warm-class-<hash>=<count>``
    Free graph slabs a pod of this reuse class could be handed now, and how many. The class
    is what ``policy.reusable`` matches on: namespace (only when the scope is "namespace"),
    size_mb, fs.
``slabvol.io/warm-key-<hash>=<count>``
    The same, for the free slabs of that class last used with one cache_key.

The hash is the first 10 hex digits (40 bits) of the SHA-256 of a canonical string whose
fields are separated by NUL (which no namespace, size, fs or cache_key can contain):

    class:  "slabvol.class.v1" NUL scope NUL namespace NUL size_mb NUL fs
    key:    "slabvol.key.v1"   NUL scope NUL namespace NUL size_mb NUL fs NUL cache_key

with namespace "" when the scope is "node", fs "" read as "ext4", size_mb in decimal. The
namespace and the key never appear in clear. The hash is a pseudonym, not a secret: whoever
can list namespaces (or guess a repository's key) can compute it. The key hash covers the
class, so a key label is only published where that very pod could reuse the slab (same
namespace under namespace scope, same size and fs).

Only free graph slabs open nowhere are listed (a slab in use, in transition, retired, open
outside the driver, or gone, is not), the most recently used first, at most ``max_warm``
warm labels in all, whatever the number of slabs.
"""

import functools
import re

from . import policy as P
from . import slab as S
from .config import DEFAULT_MAX_WARM, MAX_WARM_LIMIT
from .filesystems import DEFAULT as DEFAULT_FS

PREFIX = "slabvol.io/"
ROOM = PREFIX + "room-mib"
WARM_CLASS = PREFIX + "warm-class-"
WARM_KEY = PREFIX + "warm-key-"
HASH_HEX = 10
MAX_FEATURE_FILE_BYTES = 65536  # NFD's MaxFeatureFileSize

# Preferred node affinity weights (1..100 each; the scheduler sums the weights of the terms a
# node matches, scales the best node to 100 and, in the default profile, counts the
# NodeAffinity score twice). The terms nest: a node warm for the key is warm for the class
# and has room, so the sums are 130 / 30 / 5.
WEIGHT_KEY = 100
WEIGHT_CLASS = 25
WEIGHT_ROOM = 5

# A label's name part: at most 63 characters, alphanumeric at both ends, [-_.A-Za-z0-9]
# between; a value: empty or the same (k8s.io/apimachinery validation IsQualifiedName,
# IsValidLabelValue).
LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


def _fs(fs_type):
    return fs_type or DEFAULT_FS


def _scoped_namespace(namespace, scope):
    if scope not in P.SCOPES:
        raise ValueError(f"cache scope {scope!r} is not one of {', '.join(P.SCOPES)}")
    return namespace if scope == P.SCOPE_NAMESPACE else ""


@functools.lru_cache(maxsize=4096)  # pure; a node's slabs repeat their classes and keys
def _digest(*fields):
    import hashlib  # here: config imports this module on every kubelet call, NFD or not
    canonical = "\0".join(str(f) for f in fields)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:HASH_HEX]


def class_hash(namespace, size_mb, fs_type, scope=P.SCOPE_NAMESPACE):
    """The short hash of a reuse class (see the module's docstring)."""
    return _digest("slabvol.class.v1", scope, _scoped_namespace(namespace, scope),
                   int(size_mb), _fs(fs_type))


def key_hash(namespace, size_mb, fs_type, cache_key, scope=P.SCOPE_NAMESPACE):
    """The short hash of a cache_key within its reuse class."""
    if not cache_key:
        raise ValueError("an empty cache_key has no key hash")
    return _digest("slabvol.key.v1", scope, _scoped_namespace(namespace, scope),
                   int(size_mb), _fs(fs_type), cache_key)


def class_label(namespace, size_mb, fs_type, scope=P.SCOPE_NAMESPACE):
    return WARM_CLASS + class_hash(namespace, size_mb, fs_type, scope)


def key_label(namespace, size_mb, fs_type, cache_key, scope=P.SCOPE_NAMESPACE):
    return WARM_KEY + key_hash(namespace, size_mb, fs_type, cache_key, scope)


def room_bytes(vg, slabs, busy=frozenset()):
    """What a new slab could get now: free space plus every slab eviction could remove."""
    return vg.free + sum(s.size_bytes for s in slabs if P.evictable(s, busy))


def warm(slab, busy=frozenset()):
    """Could some pod be handed ``slab`` now? (``policy.reusable`` without the request.)"""
    return (slab.state == S.FREE and not slab.anonymous and slab.size_mb is not None
            and slab.lv_name not in busy)


def features(vg, slabs, scope=P.SCOPE_NAMESPACE, max_warm=DEFAULT_MAX_WARM, busy=frozenset()):
    """The node's labels as {name: value}.

    ``vg`` and ``slabs`` as ``driver.Snapshot`` has them, ``busy`` its ``busy()``, ``scope``
    the node's cache_scope. Warm labels come from the free slabs, most recently used first,
    each slab giving its key label (when it has a key) then its class label; the first
    ``max_warm`` distinct ones are kept, each valued with the number of free slabs it covers.
    """
    if not 0 <= max_warm <= MAX_WARM_LIMIT:
        raise ValueError(f"max_warm={max_warm} is not between 0 and {MAX_WARM_LIMIT}")
    out = {ROOM: str(room_bytes(vg, slabs, busy) // P.MIB)}
    counts, order = {}, []
    for s in sorted((s for s in slabs if warm(s, busy)), key=P.lru_key, reverse=True):
        names = [class_label(s.namespace, s.size_mb, s.fs_type, scope)]
        if s.cache_key:
            names.insert(0, key_label(s.namespace, s.size_mb, s.fs_type, s.cache_key, scope))
        for name in names:
            if name not in counts:
                order.append(name)
            counts[name] = counts.get(name, 0) + 1
    for name in order[:max_warm]:
        out[name] = str(counts[name])
    return out


def render(labels, expiry_time=None):
    """The feature file's text: a comment, an optional expiry, the lines sorted by name.

    ``expiry_time`` (RFC 3339, e.g. "2026-12-01T10:00:00Z") becomes NFD's
    ``# +expiry-time=`` directive: NFD drops the lines after that time, so a node whose
    driver stopped rewriting the file stops advertising. Write the file atomically (a
    dot-file renamed into place: NFD skips dot-files)."""
    lines = ["# slabvol: warm caches and room of this node; generated, do not edit"]
    if expiry_time is not None:
        if not _RFC3339.fullmatch(expiry_time):
            raise ValueError(f"expiry_time {expiry_time!r} is not RFC 3339")
        lines.append(f"# +expiry-time={expiry_time}")
    for name in sorted(labels):
        prefix, _, base = name.partition("/")
        value = labels[name]
        if not (prefix and LABEL_NAME.fullmatch(base) and LABEL_VALUE.fullmatch(value)):
            raise ValueError(f"{name}={value} is not a valid node label")
        lines.append(f"{name}={value}")
    text = "\n".join(lines) + "\n"
    if len(text.encode("utf-8")) > MAX_FEATURE_FILE_BYTES:
        raise ValueError("feature file larger than NFD's 64 KiB limit; lower max_warm")
    return text


def feature_file(vg, slabs, scope=P.SCOPE_NAMESPACE, max_warm=DEFAULT_MAX_WARM,
                 busy=frozenset(), expiry_time=None):
    """``render(features(...))``."""
    return render(features(vg, slabs, scope, max_warm, busy), expiry_time)


def _term(weight, key, operator, values=None):
    expression = {"key": key, "operator": operator}
    if values is not None:
        expression["values"] = list(values)
    return {"weight": weight, "preference": {"matchExpressions": [expression]}}


def affinity(namespace, size_mb, fs_type="", cache_key="", require_room=False,
             scope=P.SCOPE_NAMESPACE):
    """The pod spec's ``affinity:`` for a pod asking for ``size_mb`` of ``fs_type`` in
    ``namespace`` with ``cache_key`` (may be empty), on nodes whose cache_scope is ``scope``.

    Preferred: a node warm for the key (WEIGHT_KEY), warm for the class (WEIGHT_CLASS), with
    room (WEIGHT_ROOM). With ``require_room`` a node must also show room for the slab
    (``Gt size_mb - 1``): nodes without the label, or without room, are not considered.
    """
    size_mb = int(size_mb)
    if size_mb < 1:
        raise ValueError(f"size_mb={size_mb} is not a positive whole number")
    room = ["%d" % (size_mb - 1)]
    preferred = []
    if cache_key:
        preferred.append(_term(WEIGHT_KEY, key_label(namespace, size_mb, fs_type, cache_key,
                                                     scope), "Exists"))
    preferred.append(_term(WEIGHT_CLASS, class_label(namespace, size_mb, fs_type, scope),
                           "Exists"))
    preferred.append(_term(WEIGHT_ROOM, ROOM, "Gt", room))
    node_affinity = {"preferredDuringSchedulingIgnoredDuringExecution": preferred}
    if require_room:
        node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": ROOM, "operator": "Gt", "values": room}]}]}
    return {"nodeAffinity": node_affinity}
