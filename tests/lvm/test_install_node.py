"""install.sh on a real node: the VG parts that the unit tier can only fake.

Uses the defaults a node gets (/etc/slabvol, VG "slabvol", /var/lib/kubelet, the
vol_plugin symlink in /usr/local/sbin) with a plugin dir and a --prefix of its own. The
runtime is the one a node without internet gets: a virtual environment that install.sh
builds from the offline wheelhouse (--wheelhouse), whose driver runs `<venv>/bin/python -S`.
The guest has no network, so the wheelhouse is built on the host beforehand:
scripts/check-wheelhouse (which .ci/run runs before this tier) leaves it in
$SLABVOL_OUT/wheelhouse (out/wheelhouse). Without it, or with one built from other
sources than this checkout's, the test fails and says so.
"""

import glob
import json
import os
import shutil
import subprocess
import time
import zipfile

import pytest

from conftest import REPO, sh
from slabvol import __version__
from slabvol.install.layout import SYMLINK

VG = "slabvol"
PLUGIN_DIR = "/var/tmp/slabvol-it-plugins"
EXE = os.path.join(PLUGIN_DIR, "ax~vol_plugin", "vol_plugin")
# a root shell's PATH, without the test venv's bin (which has a vol_plugin of its own)
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def wheelhouse():
    """The offline wheelhouse that scripts/check-wheelhouse keeps, checked to hold this
    checkout's slabvol: the same version is not enough, the venv would run other code."""
    out = os.environ.get("SLABVOL_OUT") or os.path.join(REPO, "out")
    path = os.path.join(out, "wheelhouse")
    how = ("build it on the host (it needs PyPI) with scripts/check-wheelhouse, which "
           "keeps it there; .ci/run does that before the real-LVM tier")
    wheels = glob.glob(os.path.join(path, f"slabvol-{__version__}-*.whl"))
    if len(wheels) != 1:
        pytest.fail(f"no offline wheelhouse with one slabvol-{__version__} wheel at {path} "
                    f"({len(wheels)} found): {how}")
    src = os.path.join(REPO, "src")
    with zipfile.ZipFile(wheels[0]) as whl:
        packaged = {n: whl.read(n) for n in whl.namelist()
                    if n.startswith("slabvol/") and n.endswith(".py")}
    here = {}
    for dirpath, dirnames, filenames in os.walk(os.path.join(src, "slabvol")):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            if name.endswith(".py"):
                with open(os.path.join(dirpath, name), "rb") as handle:
                    here[os.path.relpath(os.path.join(dirpath, name), src)] = handle.read()
    differ = sorted(n for n in set(packaged) | set(here) if packaged.get(n) != here.get(n))
    if differ:
        pytest.fail(f"the wheelhouse at {path} was built from other sources than this "
                    f"checkout ({', '.join(differ[:5])} differ): {how}")
    return path


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


def power_off(vg, image):
    """What a reboot does to a loop-backed VG: its LVs are inactive and the loop device of
    image is gone. Returns once the kernel has really let go of the device.

    `losetup --detach` of a device that something holds open only marks it for auto-clear
    on last close. Two things can hold it: any concurrent LVM command, which scans every
    block device (hence this test runs alone), and the guest's udev, whose LVM rule (69-lvm.rules) may
    auto-activate the VG again (`vgchange -aay`) after our `vgchange -an`. Attaching the
    file again while the old device lingers makes install.sh reuse it, and the VG vanishes
    later, when the device finally goes. So: settle udev, deactivate, detach, wait; again
    if an auto-activation won the race."""
    left = []
    for _ in range(5):
        sh("udevadm", "settle", "--timeout=30", check=False)
        sh("vgchange", "-an", vg)
        sh("udevadm", "settle", "--timeout=30", check=False)
        for line in sh("losetup", "--associated", image).stdout.splitlines():
            sh("losetup", "--detach", line.split(":")[0])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            left = [line.split(":")[0] for line in
                    sh("losetup", "--associated", image).stdout.splitlines()]
            if not left:
                return
            time.sleep(0.2)
    raise AssertionError(f"{image} is still attached after 5 rounds of deactivate and "
                         f"detach:\n{holders_of(left)}")


def holders_of(devices):
    """What keeps loop devices open, for the failure message."""
    report = [sh("losetup", "--list", check=False).stdout,
              sh("dmsetup", "table", check=False).stdout]
    for dev in devices:
        name = os.path.basename(dev)
        report.append(f"{name} holders: {os.listdir(f'/sys/block/{name}/holders')}")
        report.append(sh("fuser", "-vm", dev, check=False).stderr)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            targets = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in fds}
        except OSError:
            continue
        if targets & set(devices):
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
            report.append(f"pid {pid} has it open: {b' '.join(argv).decode(errors='replace')}")
    return "\n".join(report)


def exists(vg):
    return sh("vgs", vg, check=False).returncode == 0


@pytest.fixture
def clean_node(tmp_path):
    if exists(VG) or os.path.exists("/etc/slabvol") or os.path.lexists(SYMLINK):
        pytest.fail("a slabvol install exists on this test node already")
    yield tmp_path
    install("--uninstall", "--purge", "--force", "--prefix", str(tmp_path / "slabvol"),
            check=False)


@pytest.mark.alone  # detaches a loop device: see power_off()
def test_loopback_install_mount_reattach_uninstall_purge(clean_node):
    image = str(clean_node / "slabvol.img")
    prefix = str(clean_node / "slabvol")  # named like /opt/slabvol: uninstall removes it
    wheels = wheelhouse()
    base = ["--wheelhouse", wheels, "--plugin-dir", PLUGIN_DIR, "--prefix", prefix]
    # a loop file larger than the free space under it is refused, and nothing is made
    huge = install("--loopback", str(clean_node / "huge.img"), "--size", "64T", *base,
                   check=False)
    assert huge.returncode == 1 and "less than --size 64T" in huge.stdout, huge.stdout
    assert not os.path.exists(clean_node / "huge.img") and not exists(VG)
    assert not os.path.exists("/etc/slabvol") and not os.path.exists(EXE)
    assert not os.path.exists(prefix) and not os.path.lexists(SYMLINK)

    # the runtime of a node without internet: a venv from the wheelhouse, run with -S
    out = install("--loopback", image, "--size", "1G", "--force", *base).stdout
    assert exists(VG), out
    assert f"installed slabvol and its dependencies into it from {wheels}" in out, out
    (venv_python,) = glob.glob(os.path.join(prefix, "venvs", "*", "bin", "python"))
    assert driver("init")["status"] == "Success"
    with open(EXE) as handle:
        assert handle.readline().strip() == f"#!{venv_python} -S"
    assert os.path.exists("/etc/slabvol/slabvol.conf")
    # `vol_plugin status` of the install's "Next:", found on a root shell's PATH
    assert shutil.which("vol_plugin", path=ROOT_PATH) == SYMLINK
    assert os.readlink(SYMLINK) == EXE

    again = install("--loopback", image, *base).stdout
    assert "Nothing changed" in again, again

    uid = "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6"  # pod UIDs are UUIDs; the driver checks
    target = f"/var/lib/kubelet/pods/{uid}/volumes/ax~vol_plugin/docker"
    os.makedirs(target, exist_ok=True)
    options = json.dumps({"size_mb": "128", "kubernetes.io/fsType": "ext4",
                          "kubernetes.io/pod.namespace": "ci", "kubernetes.io/pod.uid": uid})
    assert driver("mount", target, options)["status"] == "Success"
    with open(os.path.join(target, "marker"), "w") as handle:
        handle.write("warm")
    status = subprocess.run(["vol_plugin", "status", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, check=False,
                            env=dict(os.environ, PATH=ROOT_PATH))
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["volume_group"]["name"] == VG, report
    assert [(s["state"], s["pod_uid"]) for s in report["slabs"]] == [("in-use", uid)], report
    refused = install("--uninstall", "--prefix", prefix, check=False)
    assert refused.returncode != 0 and os.path.exists(EXE), refused.stdout
    assert driver("unmount", target)["status"] == "Success"

    # a reboot: VG inactive, loop device gone; install.sh attaches the file again
    power_off(VG, image)
    out = install("--loopback", image, *base).stdout
    assert f"attached {image} to a loop device" in out, out
    assert driver("mount", target, options)["status"] == "Success"
    with open(os.path.join(target, "marker")) as handle:
        assert handle.read() == "warm"
    assert driver("unmount", target)["status"] == "Success"

    # uninstall run by the installed package itself, from the venv it removes (no checkout)
    gone = subprocess.run([venv_python, "-m", "slabvol.install", "--uninstall", "--prefix",
                           prefix], cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, check=False)
    assert gone.returncode == 0, gone.stdout
    assert not os.path.exists(EXE) and not os.path.lexists(SYMLINK), gone.stdout
    assert not os.path.exists(prefix), gone.stdout
    assert exists(VG) and "slab_" in sh("lvs", "--noheadings", "-o", "lv_name", VG).stdout

    # purge keeps a VG that holds a logical volume of someone else's, with its loop file
    sh("lvcreate", "--yes", "--size", "8M", "--name", "foreign", VG)
    kept = install("--uninstall", "--purge", "--prefix", prefix, check=False)
    assert "not slabs (foreign)" in kept.stdout, kept.stdout
    assert exists(VG) and os.path.exists(image)
    assert sh("lvs", "--noheadings", "-o", "lv_name", VG).stdout.split() == ["foreign"]
    sh("lvremove", "--yes", f"{VG}/foreign")

    install("--uninstall", "--purge", "--prefix", prefix)
    assert not exists(VG) and not os.path.exists(image)
    assert not os.path.exists("/etc/slabvol")
