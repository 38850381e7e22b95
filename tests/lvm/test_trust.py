"""What a hostile or messy node does to the driver, on real LVM and real mount namespaces:
forged pod identity, slabs held open in another mount namespace, a kubelet dir behind a
symlink, an unmount while the VG is gone."""

import contextlib
import json
import os
import subprocess
import tempfile
import time

from kubelet import Kubelet


def write(path, text):
    with open(path, "w") as handle:
        handle.write(text)


@contextlib.contextmanager
def held_elsewhere(path):
    """The slab mounted at ``path`` also bind-mounted elsewhere in a new private mount
    namespace, as the dind container's own /var/lib/docker is, kept alive after the pod
    (a leaked namespace, a lingering process). A copy at ``path`` itself would not do: the
    kernel detaches mounts in other namespaces when the kubelet removes the dir."""
    hold = tempfile.mkdtemp(prefix="held-", dir=os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.dirname(os.path.dirname(path))))))
    proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                             'mount --bind "$0" "$1" && exec sleep 600', path, hold])
    try:
        ours = os.readlink("/proc/self/ns/mnt")
        deadline = time.monotonic() + 30
        while True:  # until `sleep` runs: unshare made the copies private before exec
            try:
                with open(f"/proc/{proc.pid}/cmdline", "rb") as handle:
                    program = handle.read().split(b"\0")[0]
                theirs = os.readlink(f"/proc/{proc.pid}/ns/mnt")
                with open(f"/proc/{proc.pid}/mountinfo") as handle:
                    table = handle.read()
            except OSError:
                program, theirs, table = b"", ours, ""
            if program == b"sleep" and theirs != ours and f" {hold} " in table:
                break
            assert time.monotonic() < deadline, "the second mount namespace did not appear"
            time.sleep(0.05)
        yield proc
    finally:
        proc.kill()
        proc.wait()


def gc(node):
    proc = node.human("gc")
    return proc.returncode, proc.stdout + proc.stderr


def test_options_naming_another_pod_are_refused_and_create_nothing(node, kubelet, pod_factory):
    victim, attacker = pod_factory(namespace="team-victim"), pod_factory(namespace="team-a")
    assert kubelet.mount(victim, size_mb="64").status == "Success"
    assert kubelet.unmount(victim).status == "Success"  # a warm slab of team-victim
    before = node.lvs()

    # The pod's options are copied over the kubelet's keys: the pod claims to be another.
    forged = kubelet.mount(attacker, size_mb="64", **{"kubernetes.io/pod.uid": victim.uid,
                                                      "kubernetes.io/pod.namespace":
                                                      "team-victim"})
    assert forged.status == "Failure"
    assert "must not set kubernetes.io/ keys" in forged.message
    assert node.mount_of(kubelet.volume_dir(attacker)) is None
    assert node.lvs() == before

    bad = kubelet.mount(attacker, size_mb="64", **{"kubernetes.io/pod.namespace": "x" * 64})
    assert bad.status == "Failure" and "is not a Kubernetes namespace" in bad.message
    assert node.lvs() == before


def test_slabs_held_in_another_mount_namespace_are_never_handed_out(node, kubelet,
                                                                    pod_factory):
    """Busy means open anywhere: reuse and eviction skip a slab held elsewhere, an
    anonymous slab that cannot be removed is retired (never free), mounts go on, and gc
    removes it once nothing holds it."""
    a, b, c, d, e = (pod_factory() for _ in range(5))
    with contextlib.ExitStack() as holders:
        assert kubelet.mount(a, size_mb="400").status == "Success"
        held = node.slab_at(kubelet.volume_dir(a))
        holders.enter_context(held_elsewhere(kubelet.volume_dir(a)))
        assert kubelet.unmount(a).status == "Success"
        assert node.tags(held)["state"] == "free"  # a good cache, but still open elsewhere
        assert node.mount_of(kubelet.volume_dir(a)) is None
        assert {r["lv_name"]: r["open"] for r in node.status()["slabs"]}[held] is True
        time.sleep(1.1)  # last_used has whole seconds: make `held` strictly the oldest

        assert kubelet.mount(b, size_mb="400").status == "Success"
        other = node.slab_at(kubelet.volume_dir(b))
        assert other != held, "a slab open in another mount namespace was handed out"
        assert kubelet.unmount(b).status == "Success"

        # No room for 500 MiB: evict a free slab, the least recently used one not held.
        call = kubelet.mount(c, size_mb="500")
        assert call.status == "Success", call.output
        names = {lv["name"] for lv in node.lvs()}
        assert held in names and other not in names

        assert kubelet.mount(d, size_mb="64", ax_vol_type="ax-anonymous").status == "Success"
        anonymous = node.slab_at(kubelet.volume_dir(d))
        holders.enter_context(held_elsewhere(kubelet.volume_dir(d)))
        call = kubelet.unmount(d)
        assert call.status == "Success" and "still held open" in call.message
        assert node.tags(anonymous)["state"] == "retired"

        call = kubelet.mount(e, size_mb="64")  # the node keeps working
        assert call.status == "Success", call.output
        assert node.slab_at(kubelet.volume_dir(e)) not in (held, anonymous)

        code, out = gc(node)
        assert code == 0 and f"held   {anonymous}: retired, but still open" in out, out
        assert anonymous in {lv["name"] for lv in node.lvs()}

    deadline = time.monotonic() + 30  # the namespaces are gone: nothing holds them now
    while anonymous in {lv["name"] for lv in node.lvs()}:
        code, out = gc(node)
        assert code == 0, out
        assert time.monotonic() < deadline, f"gc never removed {anonymous}: {out}"
        time.sleep(0.5)
    rows = {row["lv_name"]: row for row in node.status()["slabs"]}
    assert rows[held]["state"] == "free" and rows[held]["open"] is False
    assert kubelet.unmount(c).status == "Success" and kubelet.unmount(e).status == "Success"


def test_a_kubelet_dir_behind_a_symlink_mounts_and_unmounts(node, kubelet, pod_factory):
    """The kernel records the resolved path; the pod must not stay Terminating."""
    link = os.path.join(node.root, "kubelet-link")
    if not os.path.islink(link):
        os.symlink(node.kubelet_dir, link)
    node.write_config(kubelet_dir=link)
    through_link = Kubelet(node.plugin, link, node.env)
    pod = pod_factory()
    assert through_link.mount(pod, size_mb="64").status == "Success"
    assert through_link.mount(pod, size_mb="64").status == "Success"  # the kubelet's retry
    real = os.path.realpath(through_link.volume_dir(pod))
    assert real != through_link.volume_dir(pod)
    assert [m["mountpoint"] for m in node.mounts()].count(real) == 1
    slab = node.slab_at(real)
    write(os.path.join(real, "layer"), "warm")

    call = through_link.unmount(pod)
    assert call.status == "Success", call.output
    assert node.mount_of(real) is None and not os.path.exists(real)
    assert node.tags(slab)["state"] == "free"


def test_unmount_with_nothing_mounted_succeeds_while_the_vg_is_gone(node, kubelet,
                                                                    pod_factory):
    """A loopback VG after a reboot: LVM cannot be read, there is nothing to unmount, and
    the pod must not stay Terminating."""
    pod = pod_factory()
    os.makedirs(kubelet.volume_dir(pod))
    node.write_config(volume_group="slabvol_it_gone")
    call = kubelet.unmount(pod)
    assert call.status == "Success", call.output
    assert "nothing is mounted" in call.message
    # while mounting still says what is wrong
    call = kubelet.mount(pod_factory(), size_mb="64")
    assert call.status == "Failure" and "not found on this node" in call.message
    assert json.loads(call.output) == call.result
