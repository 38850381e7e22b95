"""The one check of what a pod asks for, whichever front end it came through: the
FlexVolume options (``flex.parse_options``), the CSI volume attributes (``csi.node``) and
``vol_plugin affinity``'s flags all become a ``policy.Request`` here, by the same rules.

Each front end names the fields its own way (``option size_mb``, ``--size-mb``), and
knows what to add when the pod's identity is wrong; a ``Spelling`` says both, so the rules
and the messages' wording live here once.
"""

import re
from collections import namedtuple

from .errors import BadRequest
from .filesystems import DEFAULT as DEFAULT_FS, FILESYSTEMS
from .policy import CACHE_KEY, NAMESPACE, POD_UID, Request
from .slab import ANONYMOUS, GRAPH, TYPES

_POSITIVE_INT = re.compile(r"[1-9][0-9]{0,9}")

# How a front end names the fields in its messages. option: put before the pod's own keys
# (size_mb, ax_vol_type, cache_key), as in "option size_mb"; names: a field's name where
# it is not the key itself; where: where the pod sets size_mb; identity: what a bad
# namespace or pod UID means there (None: the caller typed it, nothing to add).
Spelling = namedtuple("Spelling", "option names where identity")


def _shown(value, limit=80):
    """A value for a message: ASCII only (no control characters or lone surrogates), cut."""
    text = ascii(value)
    return text if len(text) <= limit else text[:limit] + "...'"


def problems(spelling, size_mb, fs_type="", vol_type="", cache_key="", namespace="",
             pod_uid=None):
    """Every rule the request breaks, in the order a pod's author fixes them: a list of
    messages, empty when it is good. Text values as the pod wrote them ("" for unset);
    ``pod_uid`` None: not checked (no pod)."""
    def name(key):
        return spelling.names.get(key, key)

    def option(key):
        return spelling.option + name(key)

    found = []
    if size_mb is None:
        found.append(f"{option('size_mb')} is missing; add e.g. size_mb: \"10240\" to "
                     f"{spelling.where}")
    elif not _POSITIVE_INT.fullmatch(size_mb):
        found.append(f"{option('size_mb')}={size_mb!r} is not a positive whole number of MiB "
                     f'(e.g. "10240")')
    if (vol_type or GRAPH) not in TYPES:
        found.append(f"{option('ax_vol_type')}={vol_type!r} is not one of {', '.join(TYPES)}")
    fs = fs_type or DEFAULT_FS
    if fs not in FILESYSTEMS:
        found.append(f"{name('fs_type')} {fs!r} is not supported; use one of "
                     f"{', '.join(FILESYSTEMS)}")
    elif size_mb and _POSITIVE_INT.fullmatch(size_mb) and int(size_mb) < FILESYSTEMS[fs].min_mb:
        found.append(f"{fs} needs {name('size_mb')} of at least {FILESYSTEMS[fs].min_mb} "
                     f"(mkfs refuses smaller filesystems); ask for more or use ext4")
    if cache_key and not CACHE_KEY.fullmatch(cache_key):
        found.append(f"{option('cache_key')} must be 1 to 200 printable ASCII characters "
                     f"without spaces")
    hint = f"; {spelling.identity}" if spelling.identity else ""
    if not NAMESPACE.fullmatch(namespace):
        found.append(f"{name('namespace')}={_shown(namespace)} is not a Kubernetes namespace "
                     f"(a DNS-1123 label of at most 63 characters){hint}")
    if pod_uid is not None and not POD_UID.fullmatch(pod_uid):
        found.append(f"{name('pod_uid')}={_shown(pod_uid)} is not a pod UID (a UUID){hint}")
    return found


def build(spelling, size_mb, fs_type="", vol_type="", cache_key="", namespace="", pod_uid=""):
    """The ``policy.Request`` of a pod's request; BadRequest naming the first problem.
    Defaults: ext4, a graph volume; an anonymous volume has no cache key."""
    found = problems(spelling, size_mb, fs_type, vol_type, cache_key, namespace, pod_uid)
    if found:
        raise BadRequest(found[0])
    vol_type = vol_type or GRAPH
    return Request(size_mb=int(size_mb), fs_type=fs_type or DEFAULT_FS, type=vol_type,
                   namespace=namespace, pod_uid=pod_uid,
                   cache_key="" if vol_type == ANONYMOUS else cache_key)
