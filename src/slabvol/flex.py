"""The FlexVolume protocol: kubelet argv in, one result dict out.

No I/O to stdout or stderr here (``cli`` writes the result). Heavy modules are imported
only by the verbs that need them, because the kubelet starts a new process per call.
See kubelet's pkg/volume/flexvolume (driver-call.go) for the caller's side.
"""

import json
import re

from . import DRIVER_NAME

SUCCESS = "Success"
FAILURE = "Failure"
NOT_SUPPORTED = "Not supported"

CAPABILITIES = {"attach": False, "fsGroup": False, "selinuxRelabel": False,
                "supportsMetrics": True}

# Keys the kubelet adds to the pod's flexVolume.options.
FS_TYPE_KEY = "kubernetes.io/fsType"
READWRITE_KEY = "kubernetes.io/readwrite"
NAMESPACE_KEY = "kubernetes.io/pod.namespace"
POD_UID_KEY = "kubernetes.io/pod.uid"

_POSITIVE_INT = re.compile(r"[1-9][0-9]{0,9}")


def result(status, message=None, **extra):
    out = {"status": status}
    if message:
        out["message"] = message
    out.update(extra)
    return out


def exit_code(out):
    return 0 if out.get("status") == SUCCESS else 1


def parse_options(text):
    """The pod's request from the kubelet's JSON options. Raises BadRequest.

    Values of other keys (``kubernetes.io/secret/*`` among them) are never looked at,
    logged or stored.
    """
    from .errors import BadRequest
    from .filesystems import DEFAULT as DEFAULT_FS, FILESYSTEMS
    from .policy import CACHE_KEY, NAMESPACE, POD_UID, Request
    from .slab import ANONYMOUS, GRAPH, TYPES

    try:
        options = json.loads(text)
    except ValueError as exc:
        raise BadRequest(f"the mount options are not valid JSON ({exc.msg} at char "
                         f"{exc.pos})") from None
    if not isinstance(options, dict):
        raise BadRequest("the mount options must be a JSON object of strings")

    def get(key, default=""):
        value = options.get(key, default)
        if not isinstance(value, str):
            raise BadRequest(f"option {key} must be a string, got {json.dumps(value)}")
        return value

    size = get("size_mb", None) if "size_mb" in options else None
    if size is None:
        raise BadRequest('option size_mb is missing; add e.g. size_mb: "10240" to the '
                         "flexVolume options of the pod")
    if not _POSITIVE_INT.fullmatch(size):
        raise BadRequest(f"option size_mb={size!r} is not a positive whole number of MiB "
                         f'(e.g. "10240")')
    vol_type = get("ax_vol_type", GRAPH) or GRAPH
    if vol_type not in TYPES:
        raise BadRequest(f"option ax_vol_type={vol_type!r} is not one of {', '.join(TYPES)}")
    fs_type = get(FS_TYPE_KEY) or DEFAULT_FS
    if fs_type not in FILESYSTEMS:
        raise BadRequest(f"fsType {fs_type!r} is not supported; use one of "
                         f"{', '.join(FILESYSTEMS)}")
    if int(size) < FILESYSTEMS[fs_type].min_mb:
        raise BadRequest(f"{fs_type} needs size_mb of at least {FILESYSTEMS[fs_type].min_mb} "
                         f"(mkfs refuses smaller filesystems); ask for more or use ext4")
    cache_key = get("cache_key")
    if cache_key and not CACHE_KEY.fullmatch(cache_key):
        raise BadRequest("option cache_key must be 1 to 200 printable ASCII characters "
                         "without spaces")
    readonly = get(READWRITE_KEY, "rw") == "ro"
    namespace, pod_uid = get(NAMESPACE_KEY), get(POD_UID_KEY)
    if not NAMESPACE.fullmatch(namespace):
        raise BadRequest(f"{NAMESPACE_KEY}={_shown(namespace)} is not a Kubernetes namespace "
                         f"(a DNS-1123 label of at most 63 characters); the kubelet always "
                         f"sends one, so a pod's options must have overridden it")
    if not POD_UID.fullmatch(pod_uid):
        raise BadRequest(f"{POD_UID_KEY}={_shown(pod_uid)} is not a pod UID (a UUID); the "
                         f"kubelet always sends one, so a pod's options must have overridden it")
    request = Request(size_mb=int(size), fs_type=fs_type, type=vol_type,
                      namespace=namespace, pod_uid=pod_uid,
                      cache_key="" if vol_type == ANONYMOUS else cache_key)
    return request, readonly


def _shown(value, limit=80):
    """A value for a message: ASCII only (no control characters or lone surrogates), cut."""
    text = ascii(value)
    return text if len(text) <= limit else text[:limit] + "...'"


def handle(argv, environ=None):
    """Run one kubelet call; always return a result dict, never raise."""
    verb = argv[0] if argv else ""
    if verb == "init":
        return result(SUCCESS, capabilities=dict(CAPABILITIES))
    if verb not in ("mount", "unmount"):
        return result(NOT_SUPPORTED, f"{DRIVER_NAME} does not implement {verb or 'an empty verb'!r}")
    try:
        return _handle_volume_call(verb, argv[1:], environ)
    except Exception as exc:  # the edge: every failure becomes one JSON object
        from .errors import SlabvolError
        log = _log()
        if isinstance(exc, SlabvolError):
            log.error("%s failed: %s", verb, exc)
            return result(FAILURE, str(exc))
        log.exception("%s failed with an unexpected error", verb)
        return result(FAILURE, f"internal error in {DRIVER_NAME} {verb}: "
                               f"{type(exc).__name__}: {exc}; details are in the slabvol log")


def record(config, driver, event, evicted=0):
    """metrics.record, imported only on a node that keeps metrics (off by default)."""
    if config.metrics_file:
        from .metrics import record as record_metrics

        record_metrics(config, driver, event, evicted)


def _log():
    """The protocol's logger, imported by mount and unmount only (init needs none)."""
    from .logs import get
    return get(__name__)


def _handle_volume_call(verb, args, environ):
    from . import config as config_mod
    from .errors import BadRequest
    from .logs import configure

    want = 2 if verb == "mount" else 1
    if len(args) != want:
        usage = "mount <mount dir> <json options>" if verb == "mount" else "unmount <mount dir>"
        raise BadRequest(f"{verb} takes {want} argument(s), got {len(args)}; usage: {usage}")
    config = config_mod.load(environ=environ)
    configure(config)
    from .driver import Driver, check_mount_dir

    driver = Driver(config)
    log = _log()
    try:
        if verb == "mount":
            check_mount_dir(args[0], config.kubelet_dir)  # a wrong dir is named first
            request, readonly = parse_options(args[1])
            log.info("mount %s: %d MiB %s %s ns=%s key=%s%s", args[0], request.size_mb,
                     request.fs_type, request.type, request.namespace or "-",
                     request.cache_key or "-", " ro" if readonly else "")
            outcome = driver.mount(args[0], request, readonly)
        else:
            log.info("unmount %s", args[0])
            outcome = driver.unmount(args[0])
    except BadRequest:  # refused before anything ran: count it, and run nothing more
        record(config, None, "failure")
        raise
    except Exception:
        record(config, driver, "failure")
        raise
    record(config, driver, outcome.event, evicted=outcome.evicted)
    return result(SUCCESS, outcome.message)
