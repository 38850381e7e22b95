"""The driver's slab lifecycle against the fake node (fake LVM, mkfs, mount; pyfakefs)."""

import os

import pytest

from slabvol import policy
from slabvol import slab as S
from slabvol.config import Config
from slabvol.driver import Driver, check_mount_dir, mkfs_argv
from slabvol.lvm import ROUTINE, STRUCTURAL, report_argv
from slabvol.errors import BadRequest, Busy, CommandError, NoRoom, SlabvolError
from slabvol.policy import Request

from fakes import CLOCK, KUBELET, FakeNode, claimed_slab, free_slab, pod_dir, pod_uid

GiB = 1024  # in MiB, the unit of size_mb
MIB = 1024 * 1024
REPORT = report_argv("slabvol")  # one `lvm fullreport`, also for an empty VG (test_lvm.py)
DIR1 = pod_dir("uid-1")
DIR2 = pod_dir("uid-2")
DIR1_TAG = f"slabvol.dir={S.encode(DIR1)}"
DIR2_TAG = f"slabvol.dir={S.encode(DIR2)}"


def req(size_mb=GiB, ns="team-a", fs="ext4", key="", type=S.GRAPH, uid="uid-1"):
    return Request(size_mb=size_mb, fs_type=fs, type=type, namespace=ns, cache_key=key,
                   pod_uid=pod_uid(uid))


# -- mount: miss, hit -------------------------------------------------------------------

def test_a_miss_creates_tags_formats_claims_and_mounts_in_that_order(node, driver, pod):
    pod("uid-1")
    outcome = driver.mount(DIR1, req())
    assert node.calls == [
        REPORT,
        ["lvcreate", *STRUCTURAL, "--yes", "--wipesignatures", "y", "--zero", "y", "--name", "slab_1",
         "--size", "1073741824b", "--addtag", "slabvol.v=1", "--addtag", "slabvol.state=creating",
         "--addtag", "slabvol.ns=team-a", "--addtag", f"slabvol.pod={pod_uid('uid-1')}", "--addtag", DIR1_TAG,
         "--addtag", "slabvol.size_mb=1024", "--addtag", "slabvol.fs=ext4",
         "--addtag", "slabvol.type=ax-docker-graph-storage", "--addtag", "slabvol.uses=0",
         "slabvol"],
        ["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1",
         "/dev/slabvol/slab_1"],
        ["lvchange", *ROUTINE, "--deltag", "slabvol.state=creating", "--addtag", "slabvol.state=in-use",
         "slabvol/slab_1"],
        ["mount", "-t", "ext4", "/dev/slabvol/slab_1", DIR1],
    ]
    assert (outcome.event, outcome.slab) == ("miss", "slab_1")
    assert node.mounted_at(DIR1).device == node.device("slab_1")
    assert node.state("slab_1") == "in-use"


def test_a_miss_stores_the_cache_key_on_the_slab(node, driver, pod):
    pod("uid-1")
    driver.mount(DIR1, req(key="repo/x y"))
    assert node.slab_tags("slab_1")["key"] == "repo/x&20y"


def test_an_xfs_slab_is_made_with_mkfs_xfs_and_mounted_as_xfs(node, driver, pod):
    pod("uid-1")
    driver.mount(DIR1, req(fs="xfs"))
    assert ["mkfs.xfs", "-q", "-f", "-n", "ftype=1", "/dev/slabvol/slab_1"] in node.calls
    assert node.mounted_at(DIR1).fs_type == "xfs"


def test_mkfs_argv_for_ext4_is_fast_and_reserves_nothing():
    assert mkfs_argv("ext4", "/dev/vg/lv") == [
        "mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1",
        "/dev/vg/lv"]


def test_a_read_only_request_is_mounted_read_only(node, driver, pod):
    pod("uid-1")
    driver.mount(DIR1, req(), readonly=True)
    assert node.calls[-1] == ["mount", "-t", "ext4", "-o", "ro", "/dev/slabvol/slab_1", DIR1]


def test_unmount_frees_the_slab_with_last_used_and_use_count(node, driver, pod):
    pod("uid-1")
    driver.mount(DIR1, req())
    node.calls.clear()
    node.used[DIR1] = 20.0
    outcome = driver.unmount(DIR1)
    assert node.calls == [
        REPORT, ["umount", DIR1],
        ["lvchange", *ROUTINE, "--deltag", "slabvol.state=in-use", "--deltag", f"slabvol.pod={pod_uid('uid-1')}",
         "--deltag", DIR1_TAG, "--deltag", "slabvol.uses=0", "--addtag", "slabvol.state=free",
         "--addtag", f"slabvol.last_used={CLOCK}", "--addtag", "slabvol.uses=1", "slabvol/slab_1"],
    ]
    assert (outcome.event, outcome.slab) == ("release", "slab_1")
    assert node.slab_tags("slab_1") == {
        "v": "1", "state": "free", "ns": "team-a", "size_mb": "1024", "fs": "ext4",
        "type": "ax-docker-graph-storage", "last_used": str(CLOCK), "uses": "1"}
    assert node.mounted_at(DIR1) is None


def test_a_second_mount_of_the_same_size_and_namespace_reuses_the_slab(node, driver, pod):
    pod("uid-1"), pod("uid-2")
    driver.mount(DIR1, req())
    driver.unmount(DIR1)
    node.calls.clear()
    outcome = driver.mount(DIR2, req(uid="uid-2"))
    assert node.calls == [
        REPORT,
        ["lvchange", *ROUTINE, "--deltag", "slabvol.state=free", "--addtag", "slabvol.state=in-use",
         "--addtag", f"slabvol.pod={pod_uid('uid-2')}", "--addtag", DIR2_TAG, "slabvol/slab_1"],
        ["mount", "-t", "ext4", "/dev/slabvol/slab_1", DIR2],
    ]
    assert (outcome.event, outcome.slab) == ("hit", "slab_1")


def test_an_anonymous_slab_held_open_elsewhere_is_retired_never_freed(node, driver, pod):
    """Its umount here worked, but a copy of the mount in another mount namespace keeps
    the device open, so lvremove fails: the slab must not go back to the pool, and the
    node must keep working."""
    pod("uid-1")
    pod("uid-2")
    driver.mount(DIR1, req(type=S.ANONYMOUS))
    node.lvs["slab_1"].held = True
    outcome = driver.unmount(DIR1)
    assert outcome.event == "retire" and "still held open" in outcome.message
    assert node.mounted_at(DIR1) is None and node.state("slab_1") == "retired"
    assert driver.mount(DIR2, req(uid="uid-2")).slab == "slab_2"  # mounts go on
    node.lvs["slab_1"].held = False  # the other namespace is gone
    assert [r.slab.lv_name for r in driver.gc().repaired] == ["slab_1"]
    assert "slab_1" not in node.lvs


def test_a_slab_in_use_is_never_given_to_a_second_pod(node, driver, pod):
    pod("uid-1"), pod("uid-2")
    driver.mount(DIR1, req())
    outcome = driver.mount(DIR2, req(uid="uid-2"))
    assert (outcome.event, outcome.slab) == ("miss", "slab_2")
    assert node.mounted_at(DIR1).device != node.mounted_at(DIR2).device
    node.check_invariants()


def test_a_free_slab_mounted_somewhere_else_is_not_reused(node, driver, pod):
    pod("uid-1")
    free_slab(node, "slab_old")
    node.mount_by_hand(node.device("slab_old"), "/mnt/someone", source="/dev/mapper/x")
    assert driver.mount(DIR1, req()).event == "miss"
    assert node.state("slab_old") == "free"


def test_a_free_slab_held_open_in_another_mount_namespace_is_not_reused(node, driver, pod):
    """This process's mount table cannot see a copy of a mount in another namespace;
    LVM's lv_device_open can."""
    pod("uid-1")
    free_slab(node, "slab_held", last_used=200).held = True
    free_slab(node, "slab_idle", last_used=100)
    assert driver.mount(DIR1, req()).slab == "slab_idle"


def test_a_free_slab_held_open_elsewhere_is_not_evicted(node, driver, pod):
    pod("uid-1")
    node.vg_size = 3 * GiB * MIB
    free_slab(node, "slab_held", size_mb=GiB, last_used=50).held = True
    free_slab(node, "slab_old", size_mb=GiB, last_used=100)
    outcome = driver.mount(DIR1, req(size_mb=2 * GiB))
    assert (outcome.event, outcome.evicted) == ("miss", 1)
    assert set(node.lvs) == {"slab_held", "slab_1"}


def test_another_namespaces_slab_is_not_reused_by_default(node, driver, pod):
    pod("uid-1")
    free_slab(node, "slab_a", ns="team-b")
    assert driver.mount(DIR1, req(ns="team-a")).event == "miss"


def test_node_scope_reuses_another_namespaces_slab_and_retags_it(node, make_driver, pod):
    pod("uid-1")
    free_slab(node, "slab_a", ns="team-b")
    outcome = make_driver(cache_scope="node").mount(DIR1, req(ns="team-a"))
    assert (outcome.event, outcome.slab) == ("hit", "slab_a")
    assert node.slab_tags("slab_a")["ns"] == "team-a"


def test_a_pod_gets_the_slab_of_its_cache_key_back(node, driver, pod):
    pod("uid-1")
    free_slab(node, "slab_mine", key="repo-x", last_used=100)
    free_slab(node, "slab_newer", key="repo-y", last_used=900)
    assert driver.mount(DIR1, req(key="repo-x")).slab == "slab_mine"


def test_an_inactive_free_slab_is_activated_before_it_is_mounted(node, driver, pod):
    pod("uid-1")
    free_slab(node, "slab_a", active=False)
    driver.mount(DIR1, req())
    assert node.changes()[1:] == [["lvchange", "--activate", "y", "slabvol/slab_a"],
                                  ["mount", "-t", "ext4", "/dev/slabvol/slab_a", DIR1]]


def test_an_anonymous_request_never_reuses_and_is_removed_on_unmount(node, driver, pod):
    pod("uid-1")
    free_slab(node, "slab_a")
    outcome = driver.mount(DIR1, req(type=S.ANONYMOUS))
    assert outcome.event == "miss"
    assert node.slab_tags(outcome.slab)["type"] == "ax-anonymous"
    node.calls.clear()
    assert driver.unmount(DIR1).event == "remove"
    assert node.changes() == [["umount", DIR1], ["lvremove", *STRUCTURAL, "--yes", f"slabvol/{outcome.slab}"]]
    assert set(node.lvs) == {"slab_a"}


# -- idempotency ------------------------------------------------------------------------

def test_mount_of_a_mounted_dir_does_nothing(node, driver, pod):
    pod("uid-1")
    driver.mount(DIR1, req())
    node.calls.clear()
    outcome = driver.mount(DIR1, req())
    assert (outcome.event, outcome.slab) == ("noop", "slab_1")
    assert node.calls == [REPORT]


def test_unmount_of_an_unmounted_dir_does_nothing(node, driver, pod):
    pod("uid-1")
    driver.mount(DIR1, req())
    driver.unmount(DIR1)
    node.calls.clear()
    assert driver.unmount(DIR1).event == "noop"
    assert node.calls == [REPORT]
    assert node.state("slab_1") == "free"


def test_unmount_of_a_never_mounted_dir_runs_only_the_report(node, driver, pod):
    pod("uid-1")
    free_slab(node, "slab_a")
    assert driver.unmount(DIR1).event == "noop"
    assert node.calls == [REPORT]


def test_unmount_of_a_dir_the_kubelet_already_removed_succeeds(node, driver):
    assert driver.unmount(DIR1).event == "noop"
    assert node.changes() == []


# -- unmount: busy, prune, unreadable usage ---------------------------------------------

def test_a_busy_filesystem_fails_the_unmount_and_changes_nothing(node, driver, pod):
    pod("uid-1")
    driver.mount(DIR1, req())
    before = list(node.lvs["slab_1"].tags)
    node.busy_dirs.add(DIR1)
    node.calls.clear()
    with pytest.raises(Busy, match=f"{DIR1} is still in use .*target is busy.*fuser -vm {DIR1}"):
        driver.unmount(DIR1)
    assert node.changes() == [["umount", DIR1]]
    assert node.lvs["slab_1"].tags == before
    assert node.mounted_at(DIR1) is not None


def test_the_unmount_retried_after_busy_succeeds(node, driver, pod):
    pod("uid-1")
    driver.mount(DIR1, req())
    node.busy_dirs.add(DIR1)
    with pytest.raises(Busy):
        driver.unmount(DIR1)
    node.busy_dirs.clear()
    assert driver.unmount(DIR1).event == "release"


def test_another_umount_failure_is_a_command_error(node, driver, pod):
    pod("uid-1")
    driver.mount(DIR1, req())
    node.failures["umount"] = (32, f"umount: {DIR1}: must be superuser to unmount.\n")
    with pytest.raises(CommandError, match="must be superuser"):
        driver.unmount(DIR1)
    assert node.state("slab_1") == "in-use"


def test_a_slab_fuller_than_the_threshold_is_pruned(node, driver, pod):
    pod("uid-1")
    driver.mount(DIR1, req())
    node.used[DIR1] = 80.0
    node.calls.clear()
    outcome = driver.unmount(DIR1)
    assert outcome.event == "prune" and "80.0% used" in outcome.message
    assert node.changes() == [["umount", DIR1], ["lvremove", *STRUCTURAL, "--yes", "slabvol/slab_1"]]
    assert node.lvs == {}


def test_a_slab_at_the_threshold_is_kept(node, driver, pod):
    pod("uid-1")
    driver.mount(DIR1, req())
    node.used[DIR1] = 50.0
    assert driver.unmount(DIR1).event == "release"
    assert node.state("slab_1") == "free"


def test_the_prune_threshold_comes_from_the_config(node, make_driver, pod):
    pod("uid-1")
    driver = make_driver(prune_used_percent=90.0)
    driver.mount(DIR1, req())
    node.used[DIR1] = 80.0
    assert driver.unmount(DIR1).event == "release"


def test_a_slab_whose_usage_cannot_be_read_is_kept(node, driver, pod):
    pod("uid-1")
    driver.mount(DIR1, req())
    node.used[DIR1] = None
    outcome = driver.unmount(DIR1)
    assert outcome.event == "release" and "could not be read" in outcome.message
    assert node.state("slab_1") == "free"


def test_a_pruned_slab_that_cannot_be_removed_is_retired_not_freed(node, driver, pod):
    pod("uid-1")
    driver.mount(DIR1, req())
    node.used[DIR1] = 99.0
    node.failures["lvremove"] = (5, "  Logical volume slabvol/slab_1 contains a filesystem "
                                    "in use.\n")
    assert driver.unmount(DIR1).event == "retire"
    assert node.state("slab_1") == "retired"


def test_unmount_refuses_a_mount_that_is_not_a_slab(node, driver, pod):
    pod("uid-1")
    node.mount_by_hand((8, 1), DIR1)
    with pytest.raises(SlabvolError, match="holds a mount of /dev/sda1 that is not a slab"):
        driver.unmount(DIR1)
    assert node.changes() == []


def test_mount_refuses_a_dir_that_holds_another_mount(node, driver, pod):
    pod("uid-1")
    node.mount_by_hand((8, 1), DIR1)
    with pytest.raises(SlabvolError, match="holds a mount of /dev/sda1 that is not a slab"):
        driver.mount(DIR1, req())
    assert node.changes() == []


# -- eviction and no room ---------------------------------------------------------------

def test_free_slabs_are_evicted_lru_first_only_as_many_as_needed(node, driver, pod):
    pod("uid-1")
    node.vg_size = 3 * GiB * MIB
    for name, last_used in [("slab_new", 300), ("slab_old", 100), ("slab_mid", 200)]:
        free_slab(node, name, last_used=last_used)
    outcome = driver.mount(DIR1, req(size_mb=2 * GiB))
    changes = node.changes()
    assert changes[:2] == [["lvremove", *STRUCTURAL, "--yes", "slabvol/slab_old"],
                           ["lvremove", *STRUCTURAL, "--yes", "slabvol/slab_mid"]]
    assert [argv[0] for argv in changes[2:]] == ["lvcreate", "mkfs.ext4", "lvchange", "mount"]
    assert (outcome.event, outcome.evicted) == ("miss", 2)
    assert set(node.lvs) == {"slab_new", "slab_1"}


def test_a_victim_lvm_will_not_remove_is_skipped_and_another_chosen(node, driver, pod):
    pod("uid-1")
    node.vg_size = 3 * GiB * MIB
    free_slab(node, "slab_a", size_mb=GiB, last_used=50)
    free_slab(node, "slab_b", size_mb=GiB, last_used=100)
    node.failures["lvremove"] = (5, "  Logical volume slabvol/slab_a contains a filesystem in "
                                    "use.\n")
    outcome = driver.mount(DIR1, req(size_mb=2 * GiB))
    assert (outcome.event, outcome.evicted) == ("miss", 1)
    assert set(node.lvs) == {"slab_a", "slab_1"}
    assert node.state("slab_a") == "free"


def test_no_room_refuses_with_the_numbers_and_changes_nothing(node, driver, pod):
    pod("uid-1"), pod("uid-9")
    node.vg_size = 2 * GiB * MIB
    claimed_slab(node, "slab_busy", pod_dir("uid-9"), size_mb=2 * GiB)
    with pytest.raises(NoRoom, match="no room for a 1024 MiB slab.*0 MiB free, 2048 MiB held"):
        driver.mount(DIR1, req())
    assert node.changes() == []


def test_a_request_larger_than_the_vg_is_refused(node, driver, pod):
    pod("uid-1")
    with pytest.raises(NoRoom, match="size_mb=20480 is larger than the whole volume group"):
        driver.mount(DIR1, req(size_mb=20 * GiB))
    assert node.changes() == []


def test_lvcreate_without_room_is_no_room(node, driver, pod):
    pod("uid-1")
    node.failures["lvcreate"] = (5, '  Volume group "slabvol" has insufficient free space '
                                    '(3 extents): 256 required.\n')
    with pytest.raises(NoRoom):
        driver.mount(DIR1, req())
    assert node.lvs == {}


def test_a_missing_vg_is_a_clear_failure(node, driver, pod):
    pod("uid-1")
    node.missing_vg = True
    with pytest.raises(SlabvolError, match="volume group 'slabvol' not found on this node"):
        driver.mount(DIR1, req())


# -- failures while mounting ------------------------------------------------------------

def test_a_failed_mkfs_removes_the_new_lv(node, driver, pod):
    pod("uid-1")
    node.failures["mkfs.ext4"] = (1, "mkfs.ext4: Device size reported to be zero.\n")
    with pytest.raises(CommandError, match="Device size reported to be zero"):
        driver.mount(DIR1, req())
    assert node.changes()[-1] == ["lvremove", *STRUCTURAL, "--yes", "slabvol/slab_1"]
    assert node.lvs == {} and node.mounted_at(DIR1) is None


def test_a_reused_slab_that_will_not_mount_is_removed(node, driver, pod):
    pod("uid-1")
    free_slab(node, "slab_a")
    node.failures["mount"] = (32, f"mount: {DIR1}: wrong fs type, bad option, bad superblock on "
                                  f"/dev/slabvol/slab_a, missing codepage or helper program, "
                                  f"or other error.\n")
    with pytest.raises(SlabvolError, match="mounting cached slab slab_a on .* failed "
                                           r"\(mount: .*wrong fs type.*\); the slab was removed"):
        driver.mount(DIR1, req())
    assert node.changes()[-1] == ["lvremove", *STRUCTURAL, "--yes", "slabvol/slab_a"]
    assert node.lvs == {}


def test_after_a_failed_mount_the_retry_creates_a_fresh_slab(node, driver, pod):
    pod("uid-1")
    free_slab(node, "slab_a")
    node.failures["mount"] = (32, "mount: bad superblock\n")
    with pytest.raises(SlabvolError):
        driver.mount(DIR1, req())
    assert driver.mount(DIR1, req()).event == "miss"
    node.check_invariants()


def test_a_claimed_slab_that_will_not_activate_is_dropped_and_the_retry_gets_another(
        node, driver, pod):
    """Any failure between the claim and a successful mount drops the slab: the kubelet's
    retry must not "finish the interrupted mount" of the same broken slab for ever."""
    pod("uid-1")
    free_slab(node, "slab_a", active=False)
    node.unactivatable.add("slab_a")
    with pytest.raises(SlabvolError, match=r"mounting cached slab slab_a .* failed \(.*reload "
                                           r"ioctl.*\); the slab was removed"):
        driver.mount(DIR1, req())
    assert "slab_a" not in node.lvs
    assert driver.mount(DIR1, req()).event == "miss"
    node.check_invariants()


def test_a_broken_slab_that_cannot_be_removed_is_retired_never_reused(node, driver, pod):
    pod("uid-1")
    pod("uid-2")
    free_slab(node, "slab_a", active=False)
    node.unactivatable.add("slab_a")
    node.failures["lvremove"] = (5, "  Logical volume slabvol/slab_a contains a filesystem in "
                                    "use.\n")
    with pytest.raises(SlabvolError, match="the slab was retired"):
        driver.mount(DIR1, req())
    assert node.state("slab_a") == "retired"
    assert "dir" not in node.slab_tags("slab_a") and "pod" not in node.slab_tags("slab_a")
    assert driver.mount(DIR2, req(uid="uid-2")).event == "miss"  # (gc removed slab_a first)
    assert "slab_a" not in node.lvs


def test_a_new_slab_that_will_not_mount_is_removed(node, driver, pod):
    pod("uid-1")
    node.failures["mount"] = (32, "mount: bad superblock\n")
    with pytest.raises(SlabvolError, match="mounting new slab slab_1"):
        driver.mount(DIR1, req())
    assert node.lvs == {}


# -- mount dir validation ---------------------------------------------------------------

BAD_DIRS = [
    "relative/pods/x", "var/lib/kubelet/pods/p/volumes/ax~vol_plugin/d",
    "/var/lib/kubelet/pods/../../../../etc", "/var/lib/kubelet/pods/p/../../../x",
    "/var/lib/kubelet/pods/p/./v", "/var/lib/kubelet/pods/p//v", "//var/lib/kubelet/pods/p/v",
    "/var/lib/kubelet/pods/p/v/", "/var/lib/kubelet/pods", "/var/lib/kubelet/pods/",
    "/var/lib/kubelet/plugins/x", "/var/lib/kubelet/podsx/p/v", "/etc", "/etc/kubernetes", "/",
    "",
]


@pytest.mark.parametrize("path", BAD_DIRS)
def test_mount_refuses_a_dir_outside_the_pods_tree_and_runs_nothing(node, driver, fs, path):
    with pytest.raises(BadRequest):
        driver.mount(path, req())
    assert node.calls == []


@pytest.mark.parametrize("path", BAD_DIRS)
def test_unmount_refuses_a_dir_outside_the_pods_tree_and_runs_nothing(node, driver, path):
    with pytest.raises(BadRequest):
        driver.unmount(path)
    assert node.calls == []


def test_a_symlink_out_of_the_pods_tree_is_refused(node, driver, fs):
    fs.create_dir("/etc/kubernetes")
    plugin_dir = os.path.dirname(DIR1)
    fs.create_symlink(plugin_dir, "/etc")
    evil = os.path.join(plugin_dir, "kubernetes")
    with pytest.raises(BadRequest, match="resolves to '/etc/kubernetes' through a symlink"):
        driver.mount(evil, req())
    with pytest.raises(BadRequest, match="through a symlink"):
        driver.unmount(evil)
    assert node.calls == []


def test_a_kubelet_dir_behind_a_symlink_is_accepted(fs):
    fs.create_dir(f"/data/kubelet/pods/{pod_uid('p')}/volumes/ax~vol_plugin/d")
    fs.create_symlink("/var/lib/kubelet", "/data/kubelet")
    assert check_mount_dir(pod_dir("p", "d"), "/var/lib/kubelet") == pod_uid("p")


def test_the_refusals_say_what_is_wrong(fs):
    with pytest.raises(BadRequest, match="is not an absolute path"):
        check_mount_dir("pods/x", KUBELET)
    with pytest.raises(BadRequest, match="is not a normalised path"):
        check_mount_dir(f"{KUBELET}/pods/a/../b", KUBELET)
    with pytest.raises(BadRequest, match=r"is outside /var/lib/kubelet/pods/; .*set kubelet_dir"):
        check_mount_dir("/etc/passwd", KUBELET)
    with pytest.raises(BadRequest, match="no mount dir was given"):
        check_mount_dir("", KUBELET)


def test_the_pods_tree_follows_the_configured_kubelet_dir(node, make_driver, fs):
    path = f"/data/k8s/pods/{pod_uid('p')}/volumes/ax~vol_plugin/d"
    fs.create_dir(path)
    driver = make_driver(kubelet_dir="/data/k8s")
    assert driver.mount(path, req(uid="p")).event == "miss"
    with pytest.raises(BadRequest):
        driver.mount(DIR1, req())


def test_a_kubelet_dir_behind_a_symlink_mounts_and_unmounts(node, make_driver, fs):
    """The kernel records the resolved path; the driver must compare resolved paths."""
    fs.create_dir("/data/kubelet/pods")
    fs.create_symlink("/srv/kubelet", "/data/kubelet")
    driver = make_driver(kubelet_dir="/srv/kubelet")
    path = f"/srv/kubelet/pods/{pod_uid('uid-1')}/volumes/ax~vol_plugin/docker"
    fs.create_dir(path)
    assert driver.mount(path, req()).event == "miss"
    assert driver.mount(path, req()).event == "noop"  # the kubelet's retry
    assert [m.mountpoint for m in node.mounts] == [os.path.realpath(path)]
    assert driver.unmount(path).event == "release"
    assert node.mounts == [] and node.state("slab_1") == "free"


def test_options_naming_another_pod_are_refused_before_anything_runs(node, driver, pod):
    """A pod's flexVolume options are copied over the kubelet's own keys, so a pod can
    claim any identity there. The mount dir's UID is the kubelet's."""
    pod("uid-1")
    with pytest.raises(BadRequest, match=f"kubernetes.io/pod.uid='{pod_uid('uid-2')}', but the "
                                         f"kubelet mounts into the volume dir of pod "
                                         f"{pod_uid('uid-1')}"):
        driver.mount(DIR1, req(uid="uid-2"))
    assert node.calls == []


@pytest.mark.parametrize("uid", ["0123456789abcdef0123456789abcdef",  # a static pod's
                                 "8bb3a3e4-53cd-5333-92ab-5309c63d3b78"])
def test_pod_uids_of_api_and_static_pods_are_accepted(uid):
    path = f"{KUBELET}/pods/{uid}/volumes/ax~vol_plugin/docker"
    assert check_mount_dir(path, KUBELET) == uid


@pytest.mark.parametrize("path, problem", [
    (f"{KUBELET}/pods/uid-1/volumes/ax~vol_plugin/docker", "'uid-1' is not a pod UID"),
    (f"{KUBELET}/pods/8BB3A3E4-53CD-5333-92AB-5309C63D3B78/volumes/ax~vol_plugin/d",
     "is not a pod UID"),
    (f"{KUBELET}/pods/{pod_uid('p')}/volumes/kubernetes.io~empty-dir/d",
     "is not a volume dir of this driver"),
    (f"{KUBELET}/pods/{pod_uid('p')}/volumes/ax~vol_plugin", "is not a volume dir"),
    (f"{KUBELET}/pods/{pod_uid('p')}/volumes/ax~vol_plugin/d/e", "is not a volume dir"),
    (f"{KUBELET}/pods/{pod_uid('p')}/volumes/ax~vol_plugin/D", "'D' is not a volume name"),
])
def test_a_dir_that_is_not_the_kubelets_volume_dir_is_refused(path, problem):
    with pytest.raises(BadRequest, match=problem):
        check_mount_dir(path, KUBELET)


def test_unmount_with_nothing_mounted_succeeds_without_the_vg(node, driver, pod):
    """A loopback VG after a reboot: nothing is mounted, LVM cannot help, and the pod must
    not stay Terminating."""
    pod("uid-1")
    node.missing_vg = True
    outcome = driver.unmount(DIR1)
    assert outcome.event == "noop" and node.changes() == []


def test_mount_refuses_a_dir_the_kubelet_has_not_created(node, driver):
    with pytest.raises(BadRequest, match="does not exist; the kubelet creates it"):
        driver.mount(DIR1, req())
    assert node.calls == []


# -- repair: reboots and leftovers ------------------------------------------------------

def test_gc_returns_the_slab_of_a_vanished_pod_with_its_tags_intact(node, driver):
    claimed_slab(node, "slab_a", pod_dir("uid-gone"), active=False)
    repairs = driver.gc().repaired
    assert [(r.action, r.slab.lv_name) for r in repairs] == [(policy.KEEP, "slab_a")]
    assert node.slab_tags("slab_a") == {
        "v": "1", "state": "free", "size_mb": "1024", "fs": "ext4",
        "type": "ax-docker-graph-storage", "ns": "team-a", "key": "repo-x",
        "last_used": str(CLOCK), "uses": "5"}


def test_gc_removes_half_created_and_leftover_anonymous_slabs(node, driver):
    claimed_slab(node, "slab_half", DIR1, state=S.CREATING)
    claimed_slab(node, "slab_anon", pod_dir("uid-gone"), type=S.ANONYMOUS)
    free_slab(node, "slab_keep")
    repairs = driver.gc().repaired
    assert sorted((r.action, r.slab.lv_name) for r in repairs) == [
        (policy.REMOVE, "slab_anon"), (policy.REMOVE, "slab_half")]
    assert set(node.lvs) == {"slab_keep"}


def test_gc_leaves_mounted_slabs_and_live_claims_alone(node, driver, pod):
    pod("uid-1"), pod("uid-2")
    driver.mount(DIR1, req())
    claimed_slab(node, "slab_live", DIR2)
    node.calls.clear()
    assert driver.gc().repaired == []
    assert node.calls == [REPORT]


def test_gc_repairs_every_slab_it_can_and_reports_the_ones_it_cannot(node, driver):
    claimed_slab(node, "slab_half", pod_dir("uid-9"), state=S.CREATING)
    claimed_slab(node, "slab_anon", pod_dir("uid-gone"), type=S.ANONYMOUS)
    claimed_slab(node, "slab_orphan", pod_dir("uid-gone2"))
    # (the first removal fails: LVM reports LVs sorted by name, so slab_anon's)
    node.failures["lvremove"] = (5, "  Logical volume slabvol/slab_anon contains a filesystem "
                                    "in use.\n")
    report = driver.gc()
    assert [(r.slab.lv_name, error) for r, error in report.failed] == [
        ("slab_anon", "`lvremove --config 'backup { retain_min = 20 retain_days = 0 }' --yes "
                      "slabvol/slab_anon` failed with exit code 5: Logical "
                      "volume slabvol/slab_anon contains a filesystem in use.")]
    assert sorted(r.slab.lv_name for r in report.repaired) == ["slab_half", "slab_orphan"]
    assert set(node.lvs) == {"slab_anon", "slab_orphan"}
    assert node.state("slab_orphan") == "free"


def test_a_slab_gc_cannot_remove_does_not_stop_mounts(node, driver, pod):
    pod("uid-1")
    claimed_slab(node, "slab_anon", pod_dir("uid-gone"), type=S.ANONYMOUS)
    node.failures["lvremove"] = (5, "  Logical volume slabvol/slab_anon contains a filesystem "
                                    "in use.\n")
    assert driver.mount(DIR1, req()).event == "miss"


def test_gc_leaves_foreign_lvs_alone(node, driver):
    node.add_lv("root", 100, ["owner=someone"])
    node.add_lv("other", 100)
    assert driver.gc().repaired == [] and set(node.lvs) == {"root", "other"}


def test_mount_repairs_leftovers_before_planning(node, driver, pod):
    pod("uid-1")
    claimed_slab(node, "slab_half", pod_dir("uid-9"), state=S.CREATING)
    claimed_slab(node, "slab_orphan", pod_dir("uid-gone"))
    outcome = driver.mount(DIR1, req())
    assert ["lvremove", *STRUCTURAL, "--yes", "slabvol/slab_half"] in node.calls
    assert (outcome.event, outcome.slab) == ("hit", "slab_orphan")
    node.check_invariants()


def test_after_a_reboot_the_kubelets_mount_retry_remounts_the_claimed_slab(node, driver, pod):
    pod("uid-1")
    claimed_slab(node, "slab_a", DIR1, active=False)
    outcome = driver.mount(DIR1, req())
    assert (outcome.event, outcome.slab) == ("hit", "slab_a")
    assert node.changes() == [["lvchange", "--activate", "y", "slabvol/slab_a"],
                              ["mount", "-t", "ext4", "/dev/slabvol/slab_a", DIR1]]


# -- status -----------------------------------------------------------------------------

def test_status_lists_the_vg_and_every_slab(node, driver, pod):
    pod("uid-1")
    free_slab(node, "slab_b", size_mb=2 * GiB, key="k")
    driver.mount(DIR1, req(key="k2"))
    node.used[DIR1] = 42.5
    node.add_lv("foreign", 100)
    status = driver.status()
    assert status["volume_group"] == {"name": "slabvol", "size_mb": 10240,
                                      "free_mb": 10240 - 2048 - 1024 - 100}
    rows = {row["lv_name"]: row for row in status["slabs"]}
    assert set(rows) == {"slab_1", "slab_b"}
    assert rows["slab_1"] == {
        "lv_name": "slab_1", "size_mb": 1024, "fs_type": "ext4", "state": "in-use",
        "namespace": "team-a", "pod_uid": pod_uid("uid-1"), "mount_dir": DIR1,
        "used_percent": 42.5, "last_used": None, "use_count": 0, "cache_key": "k2",
        "type": "ax-docker-graph-storage", "open": True}
    assert (rows["slab_b"]["used_percent"], rows["slab_b"]["state"]) == (None, "free")


# -- the node lock (real files: pyfakefs does not emulate flock) ------------------------

def test_a_held_node_lock_makes_mount_busy_without_running_anything(tmp_path):
    from slabvol.lock import NodeLock
    kubelet = tmp_path / "kubelet"
    target = kubelet / "pods" / pod_uid("uid-1") / "volumes" / "ax~vol_plugin" / "v"
    target.mkdir(parents=True)
    config = Config(kubelet_dir=str(kubelet), lock_file=str(tmp_path / "lock"), lock_timeout=0.1)
    node = FakeNode()
    driver = Driver(config, runner=node, read_mounts=node.read_mounts, usage=node.usage)
    with NodeLock(config.lock_file):
        with pytest.raises(Busy, match="another slabvol operation has held"):
            driver.mount(str(target), req())
    assert node.calls == []
    assert driver.mount(str(target), req()).event == "miss"


def test_gc_uses_the_lock_too(tmp_path):
    from slabvol.lock import NodeLock
    config = Config(kubelet_dir=str(tmp_path), lock_file=str(tmp_path / "lock"), lock_timeout=0.1)
    node = FakeNode()
    with NodeLock(config.lock_file):
        with pytest.raises(Busy):
            Driver(config, runner=node, read_mounts=node.read_mounts).gc()
    assert node.calls == []
    assert os.path.exists(config.lock_file)
