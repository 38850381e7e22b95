"""The NFD feature file on real LVM: after every mount, unmount and gc it says exactly
what a new LVM report says (``vol_plugin status --json``'s node_labels), and its key label
is the one ``vol_plugin affinity`` prefers for that pod."""

import json
import os
import subprocess
import time

import pytest


@pytest.fixture
def features(node):
    path = os.path.join(node.root, "features.d", "slabvol")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    node.write_config(nfd_features_file=path)
    yield path
    node.write_config()
    os.remove(path)


def published(path):
    with open(path) as handle:
        return dict(line.rstrip("\n").split("=", 1) for line in handle
                    if not line.startswith("#"))


def assert_matches_a_new_report(node, path):
    assert published(path) == node.status()["node_labels"]


def test_the_feature_file_tracks_mount_unmount_and_gc(node, kubelet, pod_factory, features):
    a, b, c = (pod_factory(namespace="team-a") for _ in range(3))
    assert kubelet.mount(a, size_mb="64", cache_key="repo-1").status == "Success"
    assert_matches_a_new_report(node, features)
    assert kubelet.unmount(a).status == "Success"
    assert_matches_a_new_report(node, features)

    proc = node.human("affinity", "--namespace", "team-a", "--size-mb", "64", "--cache-key",
                      "repo-1", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    terms = json.loads(proc.stdout)["affinity"]["nodeAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    key_label = terms[0]["preference"]["matchExpressions"][0]["key"]
    assert published(features)[key_label] == "1"
    with open(features) as handle:
        text = handle.read()
    assert "team-a" not in text and "repo-1" not in text

    time.sleep(1.1)  # whole-second last_used: b's slab is strictly the newer
    assert kubelet.mount(b, size_mb="64", cache_key="repo-2").status == "Success"
    assert_matches_a_new_report(node, features)  # a's warm slab kept (room): still listed
    assert published(features)[key_label] == "1"
    assert kubelet.mount(c, size_mb="64", cache_key="repo-1").status == "Success"
    assert key_label not in published(features)  # taken: gone in the same locked step
    assert_matches_a_new_report(node, features)

    # A reboot: c's mount is gone, the kubelet cleaned its pod dir without an unmount.
    subprocess.run(["umount", kubelet.volume_dir(c)], check=True)
    kubelet.delete_pod_dir(c)
    gc = node.human("gc")
    assert gc.returncode == 0 and "returned to the pool" in gc.stdout, gc.stdout
    assert_matches_a_new_report(node, features)
    assert published(features)[key_label] == "1"  # c's slab is warm for repo-1 again
    assert kubelet.unmount(b).status == "Success"
    assert_matches_a_new_report(node, features)
