"""Prometheus node-exporter textfile collector output (off unless metrics_file is set).

After each mount, unmount and gc the file is rewritten atomically (temp file + rename in the
same dir). Counters survive across the per-call processes in ``<metrics_file>.counters``
(JSON), updated under a flock on that file.
"""

import fcntl
import json
import os

from . import logs
from .files import replace_file

log = logs.get(__name__)

COUNTERS = {
    "hit": ("slabvol_mount_hits_total", "Mounts served by a warm (reused) slab."),
    "miss": ("slabvol_mount_misses_total", "Mounts that had to create a new slab."),
    "evicted": ("slabvol_evictions_total", "Free slabs removed to make room for a new one."),
    "prune": ("slabvol_prunes_total", "Slabs removed on unmount because they were too full."),
    "release": ("slabvol_releases_total", "Slabs returned to the pool on unmount."),
    "failure": ("slabvol_failures_total", "mount/unmount calls that returned Failure."),
}


def record(config, driver, event, evicted=0):
    """Count ``event`` and rewrite the metrics file from the VG as the driver's call left it
    (no second LVM report after a call that read the VG); with no driver (a request refused
    before anything ran) only count it, without running LVM. Never raises: metrics must not
    fail a mount."""
    if not config.metrics_file:
        return
    try:
        counts = _bump(config.metrics_file + ".counters", event, evicted)
        if driver is None:
            return
        status = driver.status(driver.current())
        replace_file(config.metrics_file, render(status, counts))
    except Exception:  # noqa: BLE001 - see docstring
        log.exception("could not update metrics file %s", config.metrics_file)


def _bump(path, event, evicted):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "r+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            counts = json.loads(handle.read() or "{}")
        except ValueError:
            counts = {}
        if event in COUNTERS:
            counts[event] = counts.get(event, 0) + 1
        if evicted:
            counts["evicted"] = counts.get("evicted", 0) + evicted
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(counts, sort_keys=True))
    return counts


def render(status, counts):
    vg = status["volume_group"]
    lines = []

    def family(name, kind, text, samples):
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(samples)

    labels = f'vg="{vg["name"]}"'
    family("slabvol_vg_size_bytes", "gauge", "Size of the slab volume group.",
           [f"slabvol_vg_size_bytes{{{labels}}} {vg['size_mb'] * 1048576}"])
    family("slabvol_vg_free_bytes", "gauge", "Unallocated space in the slab volume group.",
           [f"slabvol_vg_free_bytes{{{labels}}} {vg['free_mb'] * 1048576}"])
    by_state, bytes_by_state = {}, {}
    for row in status["slabs"]:
        by_state[row["state"]] = by_state.get(row["state"], 0) + 1
        bytes_by_state[row["state"]] = (bytes_by_state.get(row["state"], 0)
                                        + (row["size_mb"] or 0) * 1048576)
    states = sorted(set(by_state) | {"free", "in-use"})
    family("slabvol_slabs", "gauge", "Slabs by state.",
           [f'slabvol_slabs{{{labels},state="{s}"}} {by_state.get(s, 0)}' for s in states])
    family("slabvol_slab_bytes", "gauge", "Bytes requested by slabs, by state.",
           [f'slabvol_slab_bytes{{{labels},state="{s}"}} {bytes_by_state.get(s, 0)}'
            for s in states])
    for key, (name, text) in COUNTERS.items():
        family(name, "counter", text, [f"{name}{{{labels}}} {counts.get(key, 0)}"])
    return "\n".join(lines) + "\n"
