"""The real-LVM node: a sparse file on a loop device as the PV, a fresh VG, a config
pointing at it, and the driver installed into a plugin dir as the kubelet would find it.

Needs root and device-mapper: run through tests/lvm/run, which boots a VM when the host
kernel has no device-mapper.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from kubelet import PLUGIN, Kubelet, Pod

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# one node (loop device + VG) per pytest-xdist worker, so workers never share a slab
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
VG = f"slabvol_it_{WORKER}"
PV_SIZE = os.environ.get("SLABVOL_IT_PV_SIZE", "1200M")
ENV = dict(os.environ, LC_ALL="C", LVM_SUPPRESS_FD_WARNINGS="1")


def sh(*argv, check=True, **kwargs):
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, env=ENV, **kwargs)
    if check and proc.returncode:
        raise AssertionError(f"{argv} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
    return proc


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.lvm)


class Node:
    def __init__(self, root, device):
        self.root = root
        self.device = device
        self.vg = VG
        self.kubelet_dir = os.path.join(root, "kubelet")
        self.plugin_dir = os.path.join(root, "plugins")
        self.plugin = os.path.join(self.plugin_dir, PLUGIN, "vol_plugin")
        self.config_path = os.path.join(root, "slabvol.conf")
        self.log_file = os.path.join(root, "log", "slabvol.log")
        self.env = dict(ENV, SLABVOL_CONFIG=self.config_path)
        self.kubelet = Kubelet(self.plugin, self.kubelet_dir, self.env)

    # -- set-up ------------------------------------------------------------------------

    def install(self):
        """Install the driver the way install.sh does it: the executable, with this
        (virtualenv) interpreter, which has the slabvol package installed."""
        os.makedirs(os.path.dirname(self.plugin), exist_ok=True)
        with open(os.path.join(REPO, "vol_plugin")) as src:
            body = src.read().split("\n", 1)[1]
        tmp = self.plugin + ".tmp"
        with open(tmp, "w") as dst:
            dst.write(f"#!{sys.executable}\n{body}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, self.plugin)

    def write_config(self, **overrides):
        values = dict(volume_group=self.vg, kubelet_dir=self.kubelet_dir,
                      log_file=self.log_file, lock_file=os.path.join(self.root, "lock"),
                      prune_used_percent=50, cache_scope="namespace")
        values.update(overrides)
        with open(self.config_path, "w") as handle:
            handle.write("[slabvol]\n")
            handle.writelines(f"{k} = {v}\n" for k, v in values.items())

    def reset(self):
        """Back to an empty VG and no pods, whatever the last test left."""
        for mount in reversed(self.mounts()):
            if mount["mountpoint"].startswith(self.root + "/"):
                sh("umount", "-l", mount["mountpoint"], check=False)
        shutil.rmtree(self.kubelet_dir, ignore_errors=True)
        os.makedirs(os.path.join(self.kubelet_dir, "pods"))
        for lv in self.lvs():
            sh("lvremove", "-y", f"{self.vg}/{lv['name']}")
        self.write_config()
        if os.path.exists(self.log_file):
            os.remove(self.log_file)

    # -- reading the truth -------------------------------------------------------------

    def lvs(self):
        out = sh("lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o",
                 "lv_name,lv_size,lv_tags,lv_path", self.vg).stdout
        return [{"name": r["lv_name"], "size": int(r["lv_size"]),
                 "tags": [t for t in r["lv_tags"].split(",") if t], "path": r["lv_path"]}
                for r in json.loads(out)["report"][0]["lv"]]

    def vg_free(self):
        out = sh("vgs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o",
                 "vg_free,vg_size", self.vg).stdout
        row = json.loads(out)["report"][0]["vg"][0]
        return int(row["vg_free"])

    def tags(self, lv_name):
        lv = next(lv for lv in self.lvs() if lv["name"] == lv_name)
        return dict(t[len("slabvol."):].split("=", 1) for t in lv["tags"]
                    if t.startswith("slabvol."))

    @staticmethod
    def mounts():
        out = []
        with open("/proc/self/mountinfo") as handle:
            for line in handle:
                f = line.split()
                sep = f.index("-")
                out.append({"device": f[2], "mountpoint": f[4].replace("\\040", " "),
                            "fs": f[sep + 1], "source": f[sep + 2]})
        return out

    def mount_of(self, path):
        found = [m for m in self.mounts() if m["mountpoint"] == path]
        return found[-1] if found else None

    def slab_at(self, path):
        """The LV name mounted at path (via the device numbers), or None."""
        mount = self.mount_of(path)
        if mount is None:
            return None
        for lv in self.lvs():
            st = os.stat(os.path.realpath(lv["path"])) if os.path.exists(lv["path"]) else None
            if st and f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" == mount["device"]:
                return lv["name"]
        return None

    def status(self):
        proc = subprocess.run([self.plugin, "status", "--json"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=self.env, universal_newlines=True,
                              check=False)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def human(self, *args):
        return subprocess.run([self.plugin, *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=self.env, universal_newlines=True,
                              check=False)

    def log(self):
        if not os.path.exists(self.log_file):
            return ""
        with open(self.log_file) as handle:
            return handle.read()


@pytest.fixture(scope="session")
def node():
    if os.geteuid() != 0:
        pytest.fail("the real-LVM tier needs root; run it through tests/lvm/run")
    root = tempfile.mkdtemp(prefix=f"slabvol-it-{WORKER}-")
    image = os.path.join(root, "pv.img")
    sh("truncate", "-s", PV_SIZE, image)
    device = sh("losetup", "--find", "--show", image).stdout.strip()
    try:
        sh("pvcreate", "-y", device)
        sh("vgcreate", VG, device)
        n = Node(root, device)
        n.install()
        n.reset()
        yield n
        n.reset()
        sh("vgremove", "-y", VG, check=False)
        sh("pvremove", "-y", device, check=False)
    finally:
        sh("losetup", "-d", device, check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def kubelet(node):
    node.reset()
    return node.kubelet


@pytest.fixture
def pod_factory():
    count = [0]

    def make(namespace="default", **kwargs):
        count[0] += 1
        return Pod(name=f"dind-{count[0]}", namespace=namespace, **kwargs)
    return make
