"""install.sh on a real node: the VG parts that the unit tier can only fake.

Uses the defaults a node gets (/etc/slabvol, VG "slabvol", /var/lib/kubelet) with the
runtime given by --python (the guest has no network to build a venv) and a plugin dir
of its own.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import REPO, sh

VG = "slabvol"
PLUGIN_DIR = "/var/tmp/slabvol-it-plugins"
EXE = os.path.join(PLUGIN_DIR, "ax~vol_plugin", "vol_plugin")


def install(*args, check=True):
    proc = subprocess.run([os.path.join(REPO, "install.sh"), *args], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, check=False)
    if check:
        assert proc.returncode == 0, proc.stdout
    return proc


def driver(*args):
    proc = subprocess.run([EXE, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, check=False)
    return json.loads(proc.stdout)


def detach(image):
    """Detach every loop device of image and wait until the kernel has let go of them.

    An LVM command of another test worker scans every block device; while it holds ours
    open, `losetup --detach` only marks it for auto-clear on last close. Attaching the file
    again before then would find the old device still there (the VG would vanish from
    under a later command when the device finally goes)."""
    for line in sh("losetup", "--associated", image).stdout.splitlines():
        sh("losetup", "--detach", line.split(":")[0])
    deadline = time.monotonic() + 60
    while sh("losetup", "--associated", image).stdout.strip():
        assert time.monotonic() < deadline, f"{image} is still attached 60 s after the detach"
        time.sleep(0.2)


def exists(vg):
    return sh("vgs", vg, check=False).returncode == 0


@pytest.fixture
def clean_node(tmp_path):
    if exists(VG) or os.path.exists("/etc/slabvol"):
        pytest.fail("a slabvol install exists on this test node already")
    yield tmp_path
    install("--uninstall", "--purge", "--force", "--prefix", str(tmp_path / "opt"), check=False)


@pytest.mark.alone  # detaches a loop device: see detach()
def test_loopback_install_mount_reattach_uninstall_purge(clean_node):
    image = str(clean_node / "slabvol.img")
    base = ["--python", sys.executable, "--plugin-dir", PLUGIN_DIR,
            "--prefix", str(clean_node / "opt")]
    out = install("--loopback", image, "--size", "1G", "--force", *base).stdout
    assert exists(VG), out
    assert driver("init")["status"] == "Success"
    with open(EXE) as handle:
        assert handle.readline().strip() == f"#!{sys.executable}"
    assert os.path.exists("/etc/slabvol/slabvol.conf")

    again = install("--loopback", image, *base).stdout
    assert "Nothing changed" in again, again

    target = "/var/lib/kubelet/pods/it-uid/volumes/ax~vol_plugin/docker"
    os.makedirs(target, exist_ok=True)
    options = json.dumps({"size_mb": "128", "kubernetes.io/fsType": "ext4",
                          "kubernetes.io/pod.namespace": "ci", "kubernetes.io/pod.uid": "it-uid"})
    assert driver("mount", target, options)["status"] == "Success"
    with open(os.path.join(target, "marker"), "w") as handle:
        handle.write("warm")
    refused = install("--uninstall", "--prefix", base[-1], check=False)
    assert refused.returncode != 0 and os.path.exists(EXE), refused.stdout
    assert driver("unmount", target)["status"] == "Success"

    # a reboot: VG inactive, loop device gone; install.sh attaches the file again
    sh("vgchange", "-an", VG)
    detach(image)
    out = install("--loopback", image, *base).stdout
    assert f"attached {image} to a loop device" in out, out
    assert driver("mount", target, options)["status"] == "Success"
    with open(os.path.join(target, "marker")) as handle:
        assert handle.read() == "warm"
    assert driver("unmount", target)["status"] == "Success"

    install("--uninstall", "--prefix", base[-1])
    assert not os.path.exists(EXE) and exists(VG)
    assert "slab_" in sh("lvs", "--noheadings", "-o", "lv_name", VG).stdout

    install("--uninstall", "--purge", "--prefix", base[-1])
    assert not exists(VG) and not os.path.exists(image)
    assert not os.path.exists("/etc/slabvol")
