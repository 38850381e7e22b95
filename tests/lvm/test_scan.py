"""Issue 10, item 2 on real LVM: slabvol's commands look only at its VG's devices.

With 40 unrelated loop devices carrying the PVs of 4 other VGs, a mount and an unmount read
none of them: the kernel's read counters of those devices do not move (a full-scan `vgs`,
the control, moves every one). A VG whose loop device is detached and attached again under
another name, with an empty device now holding the old name, still mounts, and the learned
device list follows. These tests attach and detach loop devices and count reads of them:
they run alone (any concurrent LVM command scans every device).
"""

import json
import os

import pytest

from conftest import sh
from extra_devices import ExtraDevices, default_directory
from slabvol.lvm import Lvm
from slabvol.lvmscan import FILTER, DeviceScan
from slabvol.process import Runner
from test_install_node import power_off

pytestmark = pytest.mark.alone


@pytest.fixture(scope="module")
def extra():
    with ExtraDevices(count=40) as devices:
        yield devices


def cache_of(node, vg):
    with open(os.path.join(node.root, f"{vg}.devices.json")) as handle:
        return json.load(handle)


def moved(before, after):
    return sorted(device for device in before if after[device] != before[device])


def test_a_mount_and_an_unmount_read_none_of_the_unrelated_devices(node, kubelet,
                                                                   pod_factory, extra):
    a, b = pod_factory(), pod_factory()
    assert kubelet.mount(a, size_mb="64").status == "Success"  # learns the VG's devices
    assert kubelet.unmount(a).status == "Success"

    before = extra.reads()
    sh("vgs", node.vg)  # the control: an unnarrowed command reads every device
    after = extra.reads()
    assert moved(before, after) == sorted(extra.devices), "the read counters are blind"

    before = extra.reads()
    assert kubelet.mount(b, size_mb="64").status == "Success"  # a hit
    assert kubelet.unmount(b).status == "Success"
    assert moved(before, extra.reads()) == []
    assert cache_of(node, node.vg)["devices"] == [node.device]


def test_the_filter_form_for_older_lvm_reads_none_either(node, kubelet, extra):
    """LVM < 2.03.12 has no --devices: the same commands with a devices/filter."""
    path = os.path.join(node.root, "filter.devices.json")
    with open(path, "w") as handle:
        json.dump({"kind": FILTER, "devices": [node.device], "vg": node.vg}, handle)
    os.chmod(path, 0o600)
    lvm = Lvm(Runner(), node.vg, DeviceScan(Runner(), node.vg, path))
    before = extra.reads()
    lvm.create("filtered", 4 * 1024 * 1024, ["slabvol.x=1"])
    assert [lv.name for lv in lvm.report()[1]] == ["filtered"]
    lvm.change_tags("filtered", ["slabvol.x=1"], ["slabvol.x=2"])
    lvm.remove("filtered")
    assert moved(before, extra.reads()) == []


@pytest.fixture
def renamed_vg(node):
    """A VG of its own on a loop device, and the file that takes the device's name later."""
    directory = default_directory()
    image = os.path.join(directory, f"scan-rename-{os.getpid()}.img")
    blank = os.path.join(directory, f"scan-blank-{os.getpid()}.img")
    sh("truncate", "-s", "256M", image, blank)
    device = sh("losetup", "--find", "--show", image).stdout.strip()
    vg = "slabvol_it_rename"
    sh("vgcreate", "-q", "-y", vg, device)
    yield vg, image, blank, device
    sh("vgremove", "-q", "-y", "-f", vg, check=False)
    for path in (image, blank):
        for line in sh("losetup", "--associated", path, check=False).stdout.splitlines():
            sh("losetup", "--detach", line.split(":")[0], check=False)
        os.remove(path)


def test_a_vg_whose_device_was_renamed_still_mounts(node, kubelet, pod_factory, renamed_vg):
    vg, image, blank, old = renamed_vg
    node.write_config(volume_group=vg)
    a, b = pod_factory(), pod_factory()
    assert kubelet.mount(a, size_mb="64").status == "Success"
    assert kubelet.unmount(a).status == "Success"
    assert cache_of(node, vg)["devices"] == [old]

    power_off(vg, image)  # the LVs inactive, the device gone
    sh("losetup", old, blank)  # an empty device takes the old name
    new = sh("losetup", "--find", "--show", image).stdout.strip()
    assert new != old

    result = kubelet.mount(b, size_mb="64")
    assert result.status == "Success", result
    assert cache_of(node, vg)["devices"] == [new]
    assert kubelet.unmount(b).status == "Success"
