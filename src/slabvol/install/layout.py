"""Where slabvol goes on a node: names, paths and defaults, in one place."""

from .. import DRIVER_NAME


DEFAULT_PREFIX = "/opt/slabvol"
DEFAULT_PLUGIN_DIR = "/usr/libexec/kubernetes/kubelet-plugins/volume/exec"
DRIVER_DIR = DRIVER_NAME.replace("/", "~")  # ax~vol_plugin
EXECUTABLE = DRIVER_NAME.split("/")[1]  # vol_plugin
SYMLINK = "/usr/local/sbin/vol_plugin"
MANIFEST = "install.json"
VENVS = "venvs"
VENV_COMPLETE = ".slabvol-complete"
DEFAULT_LOOP_FILE = "/var/lib/slabvol/slabvol.img"
DEFAULT_LOOP_SIZE = "20G"
MIN_LOOP_SIZE = 512 * 1024 * 1024
LOOP_UNIT = "slabvol-loopback.service"
LOOP_UNIT_FILE = f"/etc/systemd/system/{LOOP_UNIT}"
# In the dir nfd-worker's local source reads feature files from (node-feature-discovery
# source/local/local.go, featureFilesDir; its DaemonSets mount this hostPath).
DEFAULT_NFD_FEATURES_FILE = "/etc/kubernetes/node-feature-discovery/features.d/slabvol"
MIN_PYTHON = (3, 9)
ROOT_ENV = "SLABVOL_ROOT"

# Where kubelets look for FlexVolume drivers (for --help and the messages).
KNOWN_PLUGIN_DIRS = (
    ("kubeadm, k3s and most distributions (the kubelet default)", DEFAULT_PLUGIN_DIR),
    ("GKE", "/home/kubernetes/flexvolume"),
    ("OpenShift", "/etc/kubernetes/kubelet-plugins/volume/exec"),
    ("RKE, RKE2", "/var/lib/kubelet/volumeplugins"),
    ("AKS", "/etc/kubernetes/volumeplugins"),
    ("read-only /usr (Flatcar, Fedora CoreOS)", "/var/lib/kubelet/volumeplugins, plus the "
                                                "kubelet flag --volume-plugin-dir"),
)
