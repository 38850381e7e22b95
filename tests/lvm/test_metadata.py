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
    """A long-lived node: many more archive files of this VG than slabvol keeps (copies of a
    real one, numbered below it, as months of history would be). The next slab created
    prunes them to ARCHIVES_KEPT; another VG's archive is not touched."""
    lvm = Lvm(Runner(), node.vg)
    lvm.create("bound_0", 4 * 1024 * 1024, ["slabvol.v=1", "slabvol.state=free"])
    newest = max(archives(node.vg))
    with open(os.path.join(ARCHIVE_DIR, newest)) as handle:
        text = handle.read()
    for index in range(1, 2 * ARCHIVES_KEPT):
        for vg in (node.vg, "someone_elses_vg"):
            with open(os.path.join(ARCHIVE_DIR, f"{vg}_{index:05d}-1.vg"), "w") as handle:
                handle.write(text)
    assert len(archives(node.vg)) >= 2 * ARCHIVES_KEPT
    lvm.remove("bound_0")
    assert 0 < len(archives(node.vg)) <= ARCHIVES_KEPT
    assert len(archives("someone_elses_vg")) == 2 * ARCHIVES_KEPT - 1
    for name in archives("someone_elses_vg"):
        os.remove(os.path.join(ARCHIVE_DIR, name))
