"""kill -9 at every step of mount and unmount, then retry as the kubelet would."""

import json
import os
import random
import signal
import subprocess
import time

import pytest

from invariants import check_accounting

MOUNT_POINTS = ["mount:after-evict", "mount:after-lvcreate", "mount:after-mkfs",
                "mount:after-claim", "mount:after-mount"]


def killed_call(kubelet, *args, failpoint):
    """Run one call that the failpoint kills; it must die by SIGKILL having printed nothing."""
    proc = subprocess.run([kubelet.plugin_path, *args], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=dict(kubelet.env, SLABVOL_FAILPOINT=failpoint), timeout=300)
    assert proc.returncode == -signal.SIGKILL, (failpoint, proc.returncode, proc.stdout)
    assert proc.stdout == b""


def mount_args(kubelet, pod, **opts):
    target = kubelet.volume_dir(pod)
    os.makedirs(target, mode=0o750, exist_ok=True)
    return ["mount", target, json.dumps(kubelet.options(pod, **opts))]


def fill_with_free_slabs(kubelet, pod_factory):
    """Three free 300 MiB slabs (held at once, so none is reused for the next)."""
    pods = [pod_factory() for _ in range(3)]
    for pod in pods:
        assert kubelet.mount(pod, size_mb="300").status == "Success"
    for pod in pods:
        assert kubelet.unmount(pod).status == "Success"


# A new slab passes every step; a reused one is only claimed and mounted.
CASES = [("create", point) for point in MOUNT_POINTS] + \
        [("reuse", "mount:after-claim"), ("reuse", "mount:after-mount")]


@pytest.mark.parametrize("path,failpoint", CASES)
def test_mount_killed_at_each_step_is_finished_by_the_retry(node, kubelet, pod_factory,
                                                            path, failpoint):
    size = "64"
    if failpoint == "mount:after-evict":
        fill_with_free_slabs(kubelet, pod_factory)
        size = "500"
    elif path == "reuse":
        warm = pod_factory()
        kubelet.mount(warm, size_mb=size)
        with open(os.path.join(kubelet.volume_dir(warm), "layer"), "w") as handle:
            handle.write("warm")
        kubelet.unmount(warm)
    pod = pod_factory()
    killed_call(kubelet, *mount_args(kubelet, pod, size_mb=size), failpoint=failpoint)

    call = kubelet.mount(pod, size_mb=size)
    assert call.status == "Success", call.output
    target = kubelet.volume_dir(pod)
    assert node.slab_at(target) is not None
    if path == "reuse":
        with open(os.path.join(target, "layer")) as handle:
            assert handle.read() == "warm", "the retry must finish the claim on the warm slab"
    check_accounting(node)
    assert kubelet.unmount(pod).status == "Success"
    check_accounting(node)


def test_unmount_killed_after_umount_is_released_by_the_retry(node, kubelet, pod_factory):
    pod = pod_factory()
    kubelet.mount(pod, size_mb="64")
    killed_call(kubelet, "unmount", kubelet.volume_dir(pod), failpoint="unmount:after-umount")
    assert node.mount_of(kubelet.volume_dir(pod)) is None
    assert kubelet.unmount(pod).status == "Success"
    [lv] = node.lvs()
    assert node.tags(lv["name"])["state"] == "free"
    check_accounting(node)


def test_random_kills_during_mount_and_unmount_leak_nothing(node, kubelet, pod_factory):
    rng = random.Random(int(os.environ.get("SLABVOL_SEED", "4")))
    for _ in range(6):
        pod = pod_factory()
        for args in (mount_args(kubelet, pod, size_mb="64"),
                     ["unmount", kubelet.volume_dir(pod)]):
            proc = subprocess.Popen([kubelet.plugin_path, *args], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    env=kubelet.env)
            time.sleep(rng.uniform(0.0, 3.0))
            proc.kill()
            out, _ = proc.communicate()
            if proc.returncode == 0:
                assert json.loads(out)["status"] == "Success"
            # the kubelet retries until it gets Success
            retry = kubelet.call(*args) if args[0] == "mount" else kubelet.unmount(pod)
            assert retry.status == "Success", retry.output
    assert node.human("gc").returncode == 0
    check_accounting(node)
    assert {s["state"] for s in node.status()["slabs"]} <= {"free"}


def test_node_reboot_returns_the_slab_to_the_pool_with_its_cache(node, kubelet, pod_factory):
    a = pod_factory()
    kubelet.mount(a, size_mb="64")
    with open(os.path.join(kubelet.volume_dir(a), "layer"), "w") as handle:
        handle.write("survives the reboot")
    [lv] = node.lvs()
    # the reboot: the mount is gone, the kubelet cleaned the pod dir without calling unmount
    subprocess.run(["umount", kubelet.volume_dir(a)], check=True)
    kubelet.delete_pod_dir(a)
    gc = node.human("gc")
    assert gc.returncode == 0 and lv["name"] in gc.stdout, gc.stdout
    assert node.tags(lv["name"])["state"] == "free"
    check_accounting(node)
    b = pod_factory()
    assert kubelet.mount(b, size_mb="64").status == "Success"
    assert node.slab_at(kubelet.volume_dir(b)) == lv["name"]
    with open(os.path.join(kubelet.volume_dir(b), "layer")) as handle:
        assert handle.read() == "survives the reboot"
