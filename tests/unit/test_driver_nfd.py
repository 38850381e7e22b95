"""The NFD feature file (issue 11): written by mount, unmount and gc under the node lock,
from the VG as the call left it, with no second LVM report; always what a new report says.
"""

import os

import pytest

from slabvol import labels, logs
from slabvol import slab as S
from slabvol.errors import SlabvolError
from slabvol.policy import Request

from fakes import free_slab, claimed_slab, make_driver, pod_dir, pod_uid

FEATURES = "/etc/kubernetes/node-feature-discovery/features.d/slabvol"
GiB = 1024


def req(size_mb=GiB, ns="team-a", key="", type=S.GRAPH, uid="uid-1"):
    return Request(size_mb=size_mb, fs_type="ext4", type=type, namespace=ns, cache_key=key,
                   pod_uid=pod_uid(uid))


@pytest.fixture
def nfd_config(config, fs):
    fs.create_dir(os.path.dirname(FEATURES))
    return config._replace(nfd_features_file=FEATURES, nfd_max_warm=8)


@pytest.fixture
def nfd_driver(node, nfd_config):
    return make_driver(node, nfd_config)


def published():
    with open(FEATURES, encoding="utf-8") as handle:
        return handle.read()


def truth(node, config):
    """The file a new process would write after reading LVM afresh."""
    fresh = make_driver(node, config)
    return labels.render(fresh.node_labels(fresh.snapshot()))


def lines(text):
    return dict(line.split("=", 1) for line in text.splitlines() if not line.startswith("#"))


def reports(node):
    return node.reports()


def key_label(key, ns="team-a", size_mb=GiB):
    return labels.key_label(ns, size_mb, "ext4", key)


def test_off_by_default_nothing_is_written(node, driver, pod, fs):
    pod("uid-1")
    fs.create_dir(os.path.dirname(FEATURES))
    driver.mount(pod_dir("uid-1"), req(key="repo-a"))
    assert os.listdir(os.path.dirname(FEATURES)) == []


def test_a_miss_publishes_the_new_room_with_no_second_report(node, nfd_driver, nfd_config, pod):
    pod("uid-1")
    free_slab(node, "other", ns="team-b")  # (not empty: an empty VG's report is issue 10's)
    nfd_driver.mount(pod_dir("uid-1"), req(key="repo-a"))
    assert len(reports(node)) == 1
    assert published() == truth(node, nfd_config)
    assert lines(published()) == {labels.ROOM: str(9 * GiB),
                                  labels.class_label("team-b", GiB, "ext4"): "1"}


def test_a_hit_takes_the_warm_slab_out_of_the_file_in_the_same_call(node, nfd_driver,
                                                                     nfd_config, pod):
    free_slab(node, "warm", key="repo-a", last_used=5)
    free_slab(node, "other", key="repo-b", last_used=9)
    pod("uid-1")
    nfd_driver.mount(pod_dir("uid-1"), req(key="repo-a"))
    assert node.state("warm") == S.IN_USE
    assert len(reports(node)) == 1
    text = published()
    assert text == truth(node, nfd_config)
    assert key_label("repo-a") not in lines(text)
    assert lines(text)[key_label("repo-b")] == "1"


def test_an_unmount_publishes_the_slab_it_returned_to_the_pool(node, nfd_driver, nfd_config,
                                                                pod):
    pod("uid-1")
    nfd_driver.mount(pod_dir("uid-1"), req(key="repo-a"))
    node.calls.clear()
    nfd_driver.unmount(pod_dir("uid-1"))
    assert len(reports(node)) == 1
    text = published()
    assert text == truth(node, nfd_config)
    assert lines(text)[key_label("repo-a")] == "1"
    assert lines(text)[labels.ROOM] == str(10 * GiB)  # the free slab can be evicted


def test_a_prune_and_an_anonymous_release_leave_no_warm_label(node, nfd_driver, nfd_config, pod):
    pod("uid-1")
    pod("uid-2")
    nfd_driver.mount(pod_dir("uid-1"), req(key="repo-a"))
    nfd_driver.mount(pod_dir("uid-2"), req(type=S.ANONYMOUS, uid="uid-2"))
    node.used[pod_dir("uid-1")] = 90.0
    nfd_driver.unmount(pod_dir("uid-1"))
    nfd_driver.unmount(pod_dir("uid-2"))
    assert published() == truth(node, nfd_config)
    assert lines(published()) == {labels.ROOM: str(10 * GiB)}


def test_eviction_is_published(node, nfd_driver, nfd_config, pod):
    for i in range(9):
        free_slab(node, f"old{i}", key=f"repo-{i}", last_used=i + 1)
    node.lvs["old0"].size = 1024 * 1024 * 1024
    pod("uid-1")
    nfd_driver.mount(pod_dir("uid-1"), req(size_mb=2 * GiB, key="new"))
    assert published() == truth(node, nfd_config)
    assert "old0" not in node.lvs


def test_gc_publishes_its_repairs(node, nfd_driver, nfd_config, fs):
    claimed_slab(node, "orphan", pod_dir("gone"))
    nfd_driver.gc()
    assert node.state("orphan") == S.FREE
    assert published() == truth(node, nfd_config)
    assert lines(published())[labels.key_label("team-a", GiB, "ext4", "repo-x")] == "1"


def test_a_mount_that_repairs_first_reads_lvm_once(node, nfd_driver, nfd_config, pod):
    claimed_slab(node, "orphan", pod_dir("gone"))
    pod("uid-1")
    nfd_driver.mount(pod_dir("uid-1"), req(key="repo-x"))
    assert len(reports(node)) == 1
    assert node.state("orphan") == S.IN_USE  # returned to the pool, then reused
    assert published() == truth(node, nfd_config)


def test_a_failed_mount_publishes_what_a_new_report_says(node, nfd_driver, nfd_config, pod):
    free_slab(node, "warm", key="repo-a")
    pod("uid-1")
    node.unactivatable.add("warm")
    node.lvs["warm"].active = False
    with pytest.raises(SlabvolError):
        nfd_driver.mount(pod_dir("uid-1"), req(key="repo-a"))
    assert "warm" not in node.lvs
    assert published() == truth(node, nfd_config)
    assert key_label("repo-a") not in lines(published())


def test_a_missing_features_dir_never_fails_the_mount(node, driver, config, pod):
    pod("uid-1")
    logs.configure(config)
    nfd = make_driver(node, config._replace(nfd_features_file=FEATURES))
    outcome = nfd.mount(pod_dir("uid-1"), req())
    assert outcome.event == "miss"
    assert not os.path.exists(FEATURES)
    with open(config.log_file) as log:
        assert "install.sh --nfd" in log.read()


def test_the_file_is_only_replaced_when_it_changes(node, nfd_driver, pod):
    pod("uid-1")
    nfd_driver.mount(pod_dir("uid-1"), req())
    before = os.stat(FEATURES).st_ino
    nfd_driver.mount(pod_dir("uid-1"), req())  # a retry: already mounted, nothing changed
    assert os.stat(FEATURES).st_ino == before


def test_labels_stay_bounded_and_name_no_namespace_or_key(node, nfd_driver, pod):
    for i in range(40):
        free_slab(node, f"s{i}", size_mb=64, ns=f"team-{i % 3}", key=f"secret-repo-{i}",
                  last_used=i + 1)
    pod("uid-1")
    nfd_driver.mount(pod_dir("uid-1"), req(size_mb=64, key="secret-repo-0"))
    text = published()
    assert len(lines(text)) == 1 + 8
    assert "secret" not in text and "team-" not in text


def test_status_carries_the_node_labels(node, driver, config):
    free_slab(node, "warm", key="repo-a")
    status = driver.status()
    assert status["node_labels"] == {labels.ROOM: str(10 * GiB), key_label("repo-a"): "1",
                                     labels.class_label("team-a", GiB, "ext4"): "1"}
