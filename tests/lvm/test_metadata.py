"""LVM's metadata history on real LVM: routine tag changes archive nothing, creating and
removing a slab archive once each, and the VG's archive stays bounded (slabvol.lvm)."""

import os

from slabvol.lvm import ARCHIVES_KEPT, Lvm
from slabvol.process import Runner

ARCHIVE_DIR = "/etc/lvm/archive"


def archives(vg):
    """This VG's archive files (named <vg>_<number>-<random>.vg by LVM)."""
    if not os.path.isdir(ARCHIVE_DIR):
        return set()
    return {f for f in os.listdir(ARCHIVE_DIR) if f.startswith(vg + "_") and f.endswith(".vg")}


def test_a_hit_cycle_archives_nothing_and_a_new_slab_once(node, kubelet, pod_factory):
    a, b = pod_factory(), pod_factory()
    before = archives(node.vg)
    assert kubelet.mount(a, size_mb="64").status == "Success"  # miss: lvcreate + claims
    assert kubelet.unmount(a).status == "Success"
    assert len(archives(node.vg) - before) == 1, "only the lvcreate may archive"

    before = archives(node.vg)
    assert kubelet.mount(b, size_mb="64").status == "Success"  # hit: a tag change
    assert kubelet.unmount(b).status == "Success"
    assert archives(node.vg) == before
    assert os.path.exists(f"/etc/lvm/backup/{node.vg}"), "the current backup is kept"


def test_the_archive_of_the_vg_stays_bounded(node, kubelet):
    lvm = Lvm(Runner(), node.vg)
    for i in range(ARCHIVES_KEPT // 2 + 3):  # more create+remove than the archive keeps
        lvm.create(f"bound_{i}", 4 * 1024 * 1024, ["slabvol.v=1", "slabvol.state=free"])
        lvm.remove(f"bound_{i}")
    assert 0 < len(archives(node.vg)) <= ARCHIVES_KEPT
