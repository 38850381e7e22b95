"""``/etc/slabvol/slabvol.conf``: written with every key commented out when there is none,
never overwritten."""

import errno
import os
import textwrap

from .. import config as config_mod
from ..errors import SlabvolError
from .host import InstallError, write_atomically
from .nfd import SET_BY


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
    defaults = config_mod.Config()
    lines = ["# slabvol node configuration, read by the ax/vol_plugin driver on every call.",
             "# Written by install.sh with every key at its default, commented out;",
             "# uncomment and change what you need. install.sh never overwrites this file",
             "# (install.sh --nfd only adds the nfd_features_file line when it is missing).",
             "# Reference: docs/operations.md.", "", f"[{config_mod.SECTION}]"]
    for key, help_text in CONFIG_HELP.items():  # in the order of Config's fields
        value = getattr(defaults, key)
        lines += ["", *(f"# {chunk}" for chunk in textwrap.wrap(
            help_text, 88, break_long_words=False, break_on_hyphens=False))]
        if key == "kubelet_dir" and kubelet_dir and kubelet_dir != value:
            lines += ["# (set by install.sh: the running kubelet's --root-dir)",
                      f"{key} = {kubelet_dir}"]
        elif key == "nfd_features_file" and nfd_features_file:
            lines += [SET_BY, f"{key} = {nfd_features_file}"]
        else:
            text = f"{value:g}" if isinstance(value, float) else str(value)
            lines.append(f"# {key} = {text}".rstrip())
    return "\n".join(lines) + "\n"


def read_config(host):
    try:
        return config_mod.load(host.path(config_mod.DEFAULT_PATH))
    except SlabvolError as exc:
        raise InstallError(f"{exc} (install.sh reads it for the volume group name)") from None


def install_config(host, kubelet, nfd_features_file=""):
    """Write the default config unless there is one (or one appears meanwhile)."""
    path = config_mod.DEFAULT_PATH
    if os.path.lexists(host.path(path)):
        host.same(f"{path} exists, not touched")
        return

    def absent(tmp):
        if os.path.lexists(host.path(path)):
            raise FileExistsError(errno.EEXIST, "not overwritten", host.path(path))
    host.apply(f"wrote default config {path}", write_atomically, host.path(path),
               default_config_text(kubelet.root_dir, nfd_features_file), 0o644, absent)
