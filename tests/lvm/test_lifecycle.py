"""The slab lifecycle on real LVM, driven through the kubelet's calling convention.

Only what needs a kernel: the filesystems made and mounted, the cache surviving an unmount,
real usage, LVM's own tags and free space. Which slab the policy picks (size, filesystem
and namespace match, cache key, LRU eviction, a full VG) and bad input are checked through
the same calls on the fake node in tests/unit/test_mount_choice.py."""

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


def test_an_xfs_slab_of_the_smallest_size_is_made_and_mounted_as_xfs(node, kubelet, pod_factory):
    pod = pod_factory()
    assert kubelet.mount(pod, size_mb="300", fs_type="xfs").status == "Success"
    assert node.mount_of(kubelet.volume_dir(pod))["fs"] == "xfs"
    [lv] = node.lvs()
    assert node.tags(lv["name"])["fs"] == "xfs"
    assert kubelet.unmount(pod).status == "Success"


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
