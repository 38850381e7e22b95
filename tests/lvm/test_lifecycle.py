"""The slab lifecycle on real LVM, driven through the kubelet's calling convention."""

import json
import os
import subprocess

from conftest import sh

MIB = 1024 * 1024


def write(path, text):
    with open(path, "w") as handle:
        handle.write(text)


def read(path):
    with open(path) as handle:
        return handle.read()


def test_init_reports_capabilities(kubelet):
    call = kubelet.init()
    assert call.result == {"status": "Success", "capabilities": {
        "attach": False, "fsGroup": False, "selinuxRelabel": False, "supportsMetrics": True}}


def test_miss_creates_a_mounted_ext4_slab(node, kubelet, pod_factory):
    pod = pod_factory()
    call = kubelet.mount(pod, size_mb="64")
    assert call.status == "Success", call.output
    target = kubelet.volume_dir(pod)
    assert node.mount_of(target)["fs"] == "ext4"
    [lv] = node.lvs()
    assert lv["size"] == 64 * MIB
    assert node.slab_at(target) == lv["name"]
    tags = node.tags(lv["name"])
    assert tags["state"] == "in-use" and tags["size_mb"] == "64" and tags["fs"] == "ext4"
    assert tags["ns"] == "default" and tags["pod"] == pod.uid
    # ext4 made for a cache: no reserved blocks
    dump = sh("tune2fs", "-l", lv["path"]).stdout
    assert "Reserved block count:     0" in dump


def test_unmount_frees_and_the_same_request_reuses_the_warm_slab(node, kubelet, pod_factory):
    a, b = pod_factory(), pod_factory()
    assert kubelet.mount(a, size_mb="64").status == "Success"
    write(os.path.join(kubelet.volume_dir(a), "layer"), "cached by pod a")
    [lv] = node.lvs()
    assert kubelet.unmount(a).status == "Success"
    assert node.mount_of(kubelet.volume_dir(a)) is None
    assert not os.path.exists(kubelet.volume_dir(a))
    tags = node.tags(lv["name"])
    assert tags["state"] == "free" and tags["uses"] == "1" and "pod" not in tags
    assert int(tags["last_used"]) > 0

    call = kubelet.mount(b, size_mb="64")
    assert call.status == "Success" and "reused" in call.message
    assert node.slab_at(kubelet.volume_dir(b)) == lv["name"]
    assert read(os.path.join(kubelet.volume_dir(b), "layer")) == "cached by pod a"
    assert len(node.lvs()) == 1


def test_a_second_pod_gets_a_different_slab_while_the_first_holds_one(node, kubelet, pod_factory):
    a, b = pod_factory(), pod_factory()
    assert kubelet.mount(a, size_mb="64").status == "Success"
    assert kubelet.mount(b, size_mb="64").status == "Success"
    slab_a, slab_b = node.slab_at(kubelet.volume_dir(a)), node.slab_at(kubelet.volume_dir(b))
    assert slab_a and slab_b and slab_a != slab_b


def test_size_mismatch_creates_a_new_slab(node, kubelet, pod_factory):
    a, b = pod_factory(), pod_factory()
    kubelet.mount(a, size_mb="64")
    kubelet.unmount(a)
    assert kubelet.mount(b, size_mb="128").status == "Success"
    assert sorted(lv["size"] for lv in node.lvs()) == [64 * MIB, 128 * MIB]


def test_xfs_slab_and_fs_type_is_part_of_the_match(node, kubelet, pod_factory):
    a, b = pod_factory(), pod_factory()
    assert kubelet.mount(a, size_mb="300", fs_type="xfs").status == "Success"
    assert node.mount_of(kubelet.volume_dir(a))["fs"] == "xfs"
    kubelet.unmount(a)
    assert kubelet.mount(b, size_mb="300", fs_type="ext4").status == "Success"
    assert node.mount_of(kubelet.volume_dir(b))["fs"] == "ext4"
    assert len(node.lvs()) == 2


def test_empty_fs_type_means_ext4(node, kubelet, pod_factory):
    pod = pod_factory()
    assert kubelet.mount(pod, size_mb="64", fs_type="").status == "Success"
    assert node.mount_of(kubelet.volume_dir(pod))["fs"] == "ext4"


def test_anonymous_slab_is_removed_on_unmount(node, kubelet, pod_factory):
    pod = pod_factory()
    assert kubelet.mount(pod, size_mb="64", ax_vol_type="ax-anonymous").status == "Success"
    assert len(node.lvs()) == 1
    assert kubelet.unmount(pod).status == "Success"
    assert node.lvs() == []


def test_a_slab_filled_past_the_threshold_is_pruned(node, kubelet, pod_factory):
    full, light = pod_factory(), pod_factory()
    kubelet.mount(full, size_mb="64")
    kubelet.mount(light, size_mb="64")
    sh("dd", "if=/dev/zero", f"of={kubelet.volume_dir(full)}/blob", "bs=1M", "count=40")
    full_lv = node.slab_at(kubelet.volume_dir(full))
    assert kubelet.unmount(full).status == "Success"
    assert kubelet.unmount(light).status == "Success"
    names = [lv["name"] for lv in node.lvs()]
    assert full_lv not in names and len(names) == 1
    assert "pruned" in node.log()


def test_repeated_mount_and_unmount_are_idempotent(node, kubelet, pod_factory):
    pod = pod_factory()
    assert kubelet.mount(pod, size_mb="64").status == "Success"
    before = node.lvs()
    again = kubelet.mount(pod, size_mb="64")
    assert again.status == "Success" and "already mounted" in again.message
    assert node.lvs() == before
    assert len([m for m in node.mounts() if m["mountpoint"] == kubelet.volume_dir(pod)]) == 1
    assert kubelet.unmount(pod).status == "Success"
    # the kubelet may call unmount again for a dir it already unmounted (and removed)
    os.makedirs(kubelet.volume_dir(pod))
    assert kubelet.unmount(pod).status == "Success"
    assert [node.tags(lv["name"])["state"] for lv in node.lvs()] == ["free"]


def test_lru_eviction_removes_only_as_many_free_slabs_as_needed(node, kubelet, pod_factory):
    # VG ~1196 MiB: three free 300 MiB slabs used in order old -> new, then ask for 500
    pods = [pod_factory() for _ in range(3)]
    for pod in pods:
        assert kubelet.mount(pod, size_mb="300").status == "Success"
    names = [node.slab_at(kubelet.volume_dir(p)) for p in pods]
    for pod in pods:
        assert kubelet.unmount(pod).status == "Success"
        sh("sleep", "1.1")  # distinct last_used seconds
    free_before = node.vg_free()
    assert free_before < 500 * MIB
    big = pod_factory()
    call = kubelet.mount(big, size_mb="500")
    assert call.status == "Success", call.output
    left = {lv["name"] for lv in node.lvs()}
    assert names[0] not in left, "the least recently used slab goes first"
    assert names[2] in left, "the most recently used slab stays"
    evicted = 1 if free_before + 300 * MIB >= 500 * MIB else 2
    assert len(left) == 1 + 3 - evicted


def test_a_full_vg_fails_cleanly_and_touches_no_slab_in_use(node, kubelet, pod_factory):
    holders = [pod_factory() for _ in range(3)]
    for pod in holders:
        assert kubelet.mount(pod, size_mb="300").status == "Success"
    before = node.lvs()
    call = kubelet.mount(pod_factory(), size_mb="500")
    assert call.status == "Failure"
    assert "500 MiB" in call.message and "free" in call.message and "in use" in call.message
    assert node.lvs() == before
    for pod in holders:
        assert node.mount_of(kubelet.volume_dir(pod)) is not None


def test_namespace_isolation_and_node_scope(node, kubelet, pod_factory):
    a = pod_factory(namespace="team-a")
    kubelet.mount(a, size_mb="64")
    write(os.path.join(kubelet.volume_dir(a), "secret-layer"), "team a")
    kubelet.unmount(a)
    b = pod_factory(namespace="team-b")
    assert kubelet.mount(b, size_mb="64").status == "Success"
    assert not os.path.exists(os.path.join(kubelet.volume_dir(b), "secret-layer"))
    assert len(node.lvs()) == 2
    kubelet.unmount(b)
    # a pod cannot widen the scope; the node's config can
    c = pod_factory(namespace="team-c")
    kubelet.mount(c, size_mb="64", cache_scope="node")
    assert len(node.lvs()) == 3
    kubelet.unmount(c)
    node.write_config(cache_scope="node")
    d = pod_factory(namespace="team-d")
    assert kubelet.mount(d, size_mb="64").status == "Success"
    assert len(node.lvs()) == 3


def test_cache_key_prefers_the_slab_last_used_with_that_key(node, kubelet, pod_factory):
    a, b = pod_factory(), pod_factory()
    kubelet.mount(a, size_mb="64", cache_key="repo-a")
    kubelet.mount(b, size_mb="64", cache_key="repo-b")
    slab_a = node.slab_at(kubelet.volume_dir(a))
    kubelet.unmount(a)
    sh("sleep", "1.1")
    kubelet.unmount(b)  # b's slab is now the most recently used
    c = pod_factory()
    kubelet.mount(c, size_mb="64", cache_key="repo-a")
    assert node.slab_at(kubelet.volume_dir(c)) == slab_a


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


def test_bad_input_is_refused_and_changes_nothing(node, kubelet, pod_factory):
    for options, words in BAD_OPTIONS:
        pod = pod_factory()
        call = kubelet.mount(pod, **options)
        assert call.status == "Failure", (options, call.output)
        assert words in call.message, (options, call.message)
    bad_dirs = ["relative/dir", "/etc/passwd-dir",
                os.path.join(kubelet.kubelet_dir, "pods", "..", "..", "escape"),
                os.path.join(kubelet.kubelet_dir, "plugins", "x")]
    for target in bad_dirs:
        call = kubelet.call("mount", target, json.dumps({"size_mb": "64"}))
        assert call.status == "Failure" and target in call.message
        assert kubelet.call("unmount", target).status == "Failure"
    assert kubelet.call("mount", kubelet.volume_dir(pod_factory()), "{not json").status == "Failure"
    assert kubelet.call("mount").status == "Failure"
    assert kubelet.call("attach", "{}").status == "Not supported"
    assert node.lvs() == []
    assert not os.path.exists("/etc/passwd-dir")


def test_secrets_appear_in_no_log_and_no_tag(node, kubelet, pod_factory):
    pod = pod_factory()
    secret = "s3cr3t-Value-That-Must-Not-Leak"
    call = kubelet.mount(pod, size_mb="64", secrets={"token": secret}, fs_group=2000)
    assert call.status == "Success"
    kubelet.unmount(pod)
    assert "mount" in node.log()
    assert secret not in node.log()
    assert all(secret not in tag for lv in node.lvs() for tag in lv["tags"])
    assert secret not in json.dumps(node.status())


def test_status_json_agrees_with_lvs(node, kubelet, pod_factory):
    a, b = pod_factory(), pod_factory(namespace="ci")
    kubelet.mount(a, size_mb="64", cache_key="k1")
    kubelet.mount(b, size_mb="128")
    sh("dd", "if=/dev/zero", f"of={kubelet.volume_dir(b)}/blob", "bs=1M", "count=8")
    kubelet.unmount(a)
    status = node.status()
    assert status["volume_group"]["name"] == node.vg
    assert status["volume_group"]["free_mb"] == node.vg_free() // MIB
    by_name = {s["lv_name"]: s for s in status["slabs"]}
    lvs = {lv["name"]: lv for lv in node.lvs()}
    assert set(by_name) == set(lvs)
    for name, row in by_name.items():
        assert row["size_mb"] * MIB == lvs[name]["size"]
        assert row["state"] == node.tags(name)["state"]
    in_use = next(s for s in status["slabs"] if s["state"] == "in-use")
    assert in_use["namespace"] == "ci" and in_use["pod_uid"] == b.uid
    assert in_use["mount_dir"] == kubelet.volume_dir(b)
    assert 5 < in_use["used_percent"] < 50
    free = next(s for s in status["slabs"] if s["state"] == "free")
    assert free["cache_key"] == "k1" and free["use_count"] == 1 and free["used_percent"] is None
    table = node.human("status")
    assert table.returncode == 0 and node.vg in table.stdout and "in-use" in table.stdout


def test_busy_filesystem_fails_unmount_without_lazy_unmount(node, kubelet, pod_factory):
    pod = pod_factory()
    kubelet.mount(pod, size_mb="64")
    holder = subprocess.Popen(["sleep", "300"], cwd=kubelet.volume_dir(pod))
    try:
        call = kubelet.unmount(pod)
        assert call.status == "Failure" and "in use" in call.message
        assert node.mount_of(kubelet.volume_dir(pod)) is not None
    finally:
        holder.kill()
        holder.wait()
    assert kubelet.unmount(pod).status == "Success"
    assert [node.tags(lv["name"])["state"] for lv in node.lvs()] == ["free"]


def test_foreign_lvs_in_the_vg_are_never_touched(node, kubelet, pod_factory):
    sh("lvcreate", "-y", "-L", "8m", "-n", "not_a_slab", node.vg)
    pod = pod_factory()
    kubelet.mount(pod, size_mb="64")
    kubelet.unmount(pod)
    assert node.human("gc").returncode == 0
    assert "not_a_slab" in [lv["name"] for lv in node.lvs()]
    assert "not_a_slab" not in json.dumps(node.status())


def test_metrics_file_counts_hits_misses_and_slabs(node, kubelet, pod_factory):
    metrics = os.path.join(node.root, "slabvol.prom")
    node.write_config(metrics_file=metrics)
    a, b = pod_factory(), pod_factory()
    kubelet.mount(a, size_mb="64")
    kubelet.unmount(a)
    kubelet.mount(b, size_mb="64")
    samples = dict(line.rsplit(" ", 1) for line in read(metrics).splitlines()
                   if line and not line.startswith("#"))
    labels = f'vg="{node.vg}"'
    assert samples[f"slabvol_mount_misses_total{{{labels}}}"] == "1"
    assert samples[f"slabvol_mount_hits_total{{{labels}}}"] == "1"
    assert samples[f"slabvol_releases_total{{{labels}}}"] == "1"
    assert samples[f'slabvol_slabs{{{labels},state="in-use"}}'] == "1"
    assert int(samples[f"slabvol_vg_free_bytes{{{labels}}}"]) == node.vg_free()
    assert not [f for f in os.listdir(node.root) if ".tmp." in f]
