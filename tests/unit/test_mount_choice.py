"""Which slab a pod gets, through the kubelet's own calls (``flex.handle``) on the fake node.

These were real-LVM tier tests (tests/lvm/test_lifecycle.py) that only re-checked the
policy's choice: reuse, size and filesystem match, namespace scope, cache key, LRU
eviction, a full VG, bad input. What a kernel proves about the same calls (mkfs, mount, the
cache surviving, eviction and crashes on real LVM) stays in tests/lvm.
"""

import json
import os

import pytest

from slabvol import flex
from slabvol.driver import Driver

from fakes import KUBELET, MIB, pod_dir, pod_uid

CONFIG = "/etc/slabvol/slabvol.conf"


@pytest.fixture
def kubelet(node, fs, monkeypatch):
    """Calls flex.handle as the kubelet runs vol_plugin: a new Driver for every call, on
    the fake node, with a clock that ticks one second per call (distinct last_used) and
    slabs named slab_1, slab_2, ... in order of creation."""
    clock = iter(range(1_700_000_000, 1_700_100_000))
    names = iter(f"slab_{i}" for i in range(1, 1000))

    def driver(config):
        tick = next(clock)
        return Driver(config, runner=node, read_mounts=node.read_mounts, usage=node.usage,
                      clock=lambda: tick, new_name=lambda: next(names))
    monkeypatch.setattr("slabvol.driver.Driver", driver)
    return Kubelet(fs)


class Kubelet:
    def __init__(self, fs):
        self.fs = fs
        self.pods = 0
        self.write_config()

    def write_config(self, **values):
        values = dict(lock_file="/run/slabvol.lock", **values)
        text = "[slabvol]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
        if os.path.exists(CONFIG):
            os.remove(CONFIG)
        self.fs.create_file(CONFIG, contents=text)

    def pod(self, namespace="default"):
        self.pods += 1
        return f"pod-{self.pods}", namespace

    @staticmethod
    def dir(pod):
        return pod_dir(pod[0])

    def mount(self, pod, fs_type="ext4", **options):
        """Create the volume dir (as the kubelet does), then call mount."""
        label, namespace = pod
        if not os.path.isdir(self.dir(pod)):
            self.fs.create_dir(self.dir(pod))
        values = {"kubernetes.io/fsType": fs_type, "kubernetes.io/readwrite": "rw",
                  "kubernetes.io/pvOrVolumeName": "docker", "kubernetes.io/pod.name": label,
                  "kubernetes.io/pod.namespace": namespace,
                  "kubernetes.io/pod.uid": pod_uid(label),
                  "kubernetes.io/serviceAccount.name": "default", **options}
        return self.call("mount", self.dir(pod), json.dumps(values))

    def unmount(self, pod):
        return self.call("unmount", self.dir(pod))

    @staticmethod
    def call(*argv):
        return flex.handle(list(argv), {"SLABVOL_CONFIG": CONFIG})


def slab_at(node, path):
    mount = node.mounted_at(path)
    return next(lv.name for lv in node.lvs.values() if node.device(lv.name) == mount.device)


def sizes(node):
    return sorted(lv.size for lv in node.lvs.values())


def test_a_second_pod_gets_a_different_slab_while_the_first_holds_one(node, kubelet):
    a, b = kubelet.pod(), kubelet.pod()
    assert kubelet.mount(a, size_mb="64")["status"] == "Success"
    assert kubelet.mount(b, size_mb="64")["status"] == "Success"
    assert slab_at(node, kubelet.dir(a)) != slab_at(node, kubelet.dir(b))
    node.check_invariants()


def test_the_same_request_after_an_unmount_reuses_the_slab(node, kubelet):
    a, b = kubelet.pod(), kubelet.pod()
    kubelet.mount(a, size_mb="64")
    warm = slab_at(node, kubelet.dir(a))
    kubelet.unmount(a)
    out = kubelet.mount(b, size_mb="64")
    assert out["status"] == "Success" and "reused" in out["message"]
    assert slab_at(node, kubelet.dir(b)) == warm and len(node.lvs) == 1


def test_a_size_mismatch_creates_a_new_slab(node, kubelet):
    a, b = kubelet.pod(), kubelet.pod()
    kubelet.mount(a, size_mb="64")
    kubelet.unmount(a)
    assert kubelet.mount(b, size_mb="128")["status"] == "Success"
    assert sizes(node) == [64 * MIB, 128 * MIB]


def test_the_filesystem_is_part_of_the_match(node, kubelet):
    a, b = kubelet.pod(), kubelet.pod()
    assert kubelet.mount(a, size_mb="300", fs_type="xfs")["status"] == "Success"
    assert node.mounted_at(kubelet.dir(a)).fs_type == "xfs"
    kubelet.unmount(a)
    assert kubelet.mount(b, size_mb="300", fs_type="ext4")["status"] == "Success"
    assert node.mounted_at(kubelet.dir(b)).fs_type == "ext4"
    assert len(node.lvs) == 2


def test_an_empty_fs_type_means_ext4(node, kubelet):
    pod = kubelet.pod()
    assert kubelet.mount(pod, size_mb="64", fs_type="")["status"] == "Success"
    assert node.mounted_at(kubelet.dir(pod)).fs_type == "ext4"
    assert "mkfs.ext4" in node.programs()


def test_lru_eviction_removes_only_as_many_free_slabs_as_needed(node, kubelet):
    node.vg_size = 1196 * MIB  # the real tier's VG: three 300 MiB slabs leave 296 MiB
    pods = [kubelet.pod() for _ in range(3)]
    for pod in pods:
        assert kubelet.mount(pod, size_mb="300")["status"] == "Success"
    names = [slab_at(node, kubelet.dir(p)) for p in pods]
    for pod in pods:  # used in order: names[0] is the least recently used
        assert kubelet.unmount(pod)["status"] == "Success"
    out = kubelet.mount(kubelet.pod(), size_mb="500")
    assert out["status"] == "Success", out
    assert set(node.lvs) == {names[1], names[2], "slab_4"}  # 296 + 300 MiB are enough


def test_a_full_vg_fails_cleanly_and_touches_no_slab_in_use(node, kubelet):
    node.vg_size = 1196 * MIB
    holders = [kubelet.pod() for _ in range(3)]
    for pod in holders:
        assert kubelet.mount(pod, size_mb="300")["status"] == "Success"
    before = {name: list(lv.tags) for name, lv in node.lvs.items()}
    node.calls.clear()
    out = kubelet.mount(kubelet.pod(), size_mb="500")
    assert out["status"] == "Failure"
    assert "500 MiB" in out["message"] and "296 MiB free" in out["message"]
    assert "900 MiB held by slabs in use" in out["message"]
    assert node.changes() == []
    assert {name: list(lv.tags) for name, lv in node.lvs.items()} == before
    assert all(node.mounted_at(kubelet.dir(pod)) is not None for pod in holders)


def test_namespace_isolation_and_the_node_scope_only_the_config_can_set(node, kubelet):
    a = kubelet.pod("team-a")
    kubelet.mount(a, size_mb="64")
    kubelet.unmount(a)
    b = kubelet.pod("team-b")
    assert kubelet.mount(b, size_mb="64")["status"] == "Success"
    assert len(node.lvs) == 2
    kubelet.unmount(b)
    c = kubelet.pod("team-c")  # a pod cannot widen the scope
    assert kubelet.mount(c, size_mb="64", cache_scope="node")["status"] == "Success"
    assert len(node.lvs) == 3
    kubelet.unmount(c)
    kubelet.write_config(cache_scope="node")  # the node's config can
    d = kubelet.pod("team-d")
    out = kubelet.mount(d, size_mb="64")
    assert out["status"] == "Success" and "reused" in out["message"]
    assert len(node.lvs) == 3


def test_a_cache_key_gets_the_slab_last_used_with_that_key(node, kubelet):
    a, b, c = kubelet.pod(), kubelet.pod(), kubelet.pod()
    kubelet.mount(a, size_mb="64", cache_key="repo-a")
    kubelet.mount(b, size_mb="64", cache_key="repo-b")
    slab_a = slab_at(node, kubelet.dir(a))
    kubelet.unmount(a)
    kubelet.unmount(b)  # b's slab is now the most recently used
    assert kubelet.mount(c, size_mb="64", cache_key="repo-a")["status"] == "Success"
    assert slab_at(node, kubelet.dir(c)) == slab_a


BAD_OPTIONS = [
    ({}, "size_mb"),
    ({"size_mb": "ten"}, "size_mb"),
    ({"size_mb": "-5"}, "size_mb"),
    ({"size_mb": "0"}, "size_mb"),
    ({"size_mb": "1.5"}, "size_mb"),
    ({"size_mb": "999999"}, "larger than the whole volume group"),
    ({"size_mb": "64", "ax_vol_type": "ax-bogus"}, "ax_vol_type"),
    ({"size_mb": "64", "fs_type": "btrfs"}, "btrfs"),
]


@pytest.mark.parametrize("options, words", BAD_OPTIONS)
def test_bad_options_are_refused_and_change_nothing(node, kubelet, options, words):
    options = dict(options)
    fs_type = options.pop("fs_type", "ext4")
    out = kubelet.mount(kubelet.pod(), fs_type=fs_type, **options)
    assert out["status"] == "Failure" and words in out["message"], out
    assert node.changes() == [] and node.lvs == {} and node.mounts == []


BAD_DIRS = ["relative/dir", "/etc/passwd-dir", f"{KUBELET}/pods/../../escape",
            f"{KUBELET}/plugins/x"]


@pytest.mark.parametrize("target", BAD_DIRS)
def test_a_dir_outside_the_pods_tree_is_refused_and_nothing_is_created(node, kubelet, target):
    out = kubelet.call("mount", target, json.dumps({"size_mb": "64"}))
    assert out["status"] == "Failure" and target in out["message"]
    assert kubelet.call("unmount", target)["status"] == "Failure"
    assert node.calls == [] and not os.path.exists(target)


@pytest.mark.parametrize("argv, status", [
    (["mount", pod_dir("pod-1"), "{not json"], "Failure"),
    (["mount"], "Failure"),
    (["attach", "{}"], "Not supported"),
])
def test_a_malformed_call_is_refused_and_runs_nothing(node, kubelet, argv, status):
    assert kubelet.call(*argv)["status"] == status
    assert node.calls == []
