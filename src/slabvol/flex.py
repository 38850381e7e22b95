"""The FlexVolume protocol: kubelet argv in, one result dict out.

No I/O to stdout or stderr here (``cli`` writes the result). Heavy modules are imported
only by the verbs that need them, because the kubelet starts a new process per call.
See kubelet's pkg/volume/flexvolume (driver-call.go) for the caller's side.
"""

import json

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

def result(status, message=None, **extra):
    out = {"status": status}
    if message:
        out["message"] = message
    out.update(extra)
    return out


def exit_code(out):
    return 0 if out.get("status") == SUCCESS else 1


def _spelling():
    from .request import Spelling

    return Spelling(option="option ", where="the flexVolume options of the pod",
                    names={"fs_type": "fsType", "namespace": NAMESPACE_KEY,
                           "pod_uid": POD_UID_KEY},
                    identity="the kubelet always sends one, so a pod's options must have "
                             "overridden it")


def parse_options(text):
    """The pod's request from the kubelet's JSON options. Raises BadRequest.

    Values of other keys (``kubernetes.io/secret/*`` among them) are never looked at,
    logged or stored.
    """
    from .errors import BadRequest
    from .request import build

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
    vol_type, fs_type, cache_key = get("ax_vol_type"), get(FS_TYPE_KEY), get("cache_key")
    readonly = get(READWRITE_KEY, "rw") == "ro"
    namespace, pod_uid = get(NAMESPACE_KEY), get(POD_UID_KEY)
    request = build(_spelling(), size, fs_type=fs_type, vol_type=vol_type,
                    cache_key=cache_key, namespace=namespace, pod_uid=pod_uid)
    return request, readonly


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
    from .driver import Driver, check_mount_dir, record

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
