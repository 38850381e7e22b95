"""``/etc/slabvol/slabvol.conf``: written with every key commented out when there is none,
never overwritten."""

import os
import tempfile

from .. import config as config_mod
from ..errors import SlabvolError
from .host import InstallError


# What each config key means, for the default config file (tests keep it complete).
CONFIG_HELP = {
    "volume_group": "The LVM volume group that holds the slabs (install.sh --disk or "
                    "--loopback creates it). Set it before running install.sh to use "
                    "another name.",
    "kubelet_dir": "The kubelet's root dir (its --root-dir). slabvol only mounts into "
                   "<kubelet_dir>/pods/.",
    "prune_used_percent": "On unmount, a slab filled above this percentage is deleted "
                          "instead of kept for the next pod (0..100).",
    "cache_scope": "Who may reuse a free slab: 'namespace' (only pods of the namespace that "
                   "used it last; caches can hold images pulled with a team's credentials) "
                   "or 'node' (any pod on this node).",
    "log_file": "Every decision is logged here (never to the kubelet).",
    "log_max_bytes": "The log file is rotated at this size; 3 old files are kept.",
    "lock_file": "The node-wide lock held during each mount, unmount and gc. Hold it "
                 "yourself (flock FILE COMMAND) to do LVM maintenance without racing "
                 "the driver.",
    "lock_timeout": "Seconds a call waits for the lock before failing (the kubelet "
                    "retries).",
    "metrics_file": "Prometheus node-exporter textfile collector file, rewritten after "
                    "each operation, e.g. /var/lib/node_exporter/textfile_collector/"
                    "slabvol.prom. Empty: off.",
    "nfd_features_file": "Node Feature Discovery feature file in which this node publishes "
                         "its warm caches and its room as node labels, rewritten under the "
                         "lock after each mount, unmount and gc, e.g. /etc/kubernetes/"
                         "node-feature-discovery/features.d/slabvol (install.sh --nfd). "
                         "Empty: off.",
    "nfd_max_warm": "At most this many warm-cache labels in the feature file (the most "
                    "recently used caches first), 0..512.",
}


def default_config_text(kubelet_dir=None, nfd_features_file=""):
    lines = ["# slabvol node configuration, read by the ax/vol_plugin driver on every call.",
             "# Written by install.sh with every key at its default, commented out;",
             "# uncomment and change what you need. install.sh never overwrites this file",
             "# (install.sh --nfd only adds the nfd_features_file line when it is missing).",
             "# Reference: docs/operations.md.", "", f"[{config_mod.SECTION}]"]
    for name, value in config_mod.DEFAULTS.items():
        text = f"{value:g}" if isinstance(value, float) else str(value)
        lines.append("")
        for chunk in _wrap(CONFIG_HELP[name]):
            lines.append(f"# {chunk}")
        if name == "kubelet_dir" and kubelet_dir and kubelet_dir != value:
            lines.append("# (set by install.sh: the running kubelet's --root-dir)")
            lines.append(f"{name} = {kubelet_dir}")
        elif name == "nfd_features_file" and nfd_features_file:
            lines.append("# (set by install.sh --nfd)")
            lines.append(f"{name} = {nfd_features_file}")
        else:
            lines.append(f"# {name} = {text}".rstrip())
    return "\n".join(lines) + "\n"


def _wrap(text, width=88):
    words, line, out = text.split(), "", []
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        out.append(line)
    return out


def read_config(host):
    path = host.path(config_mod.DEFAULT_PATH)
    try:
        return config_mod.load(path)
    except SlabvolError as exc:
        raise InstallError(f"{exc} (install.sh reads it for the volume group name)") from None


def install_config(host, kubelet, nfd_features_file=""):
    path = config_mod.DEFAULT_PATH
    if os.path.lexists(host.path(path)):
        host.same(f"{path} exists, not touched")
        return
    host.changed(f"wrote default config {path}")
    if host.dry_run:
        return
    text = default_config_text(kubelet.root_dir, nfd_features_file)
    directory = os.path.dirname(host.path(path))
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".slabvol.conf.tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.link(tmp, host.path(path))  # fails if one appeared meanwhile: never overwrite
    finally:
        os.remove(tmp)
