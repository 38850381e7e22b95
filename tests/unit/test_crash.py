"""Crash safety: a ``kill -9`` at any instant leaves a state the next call repairs.

Two ways to kill the driver: at each ``failpoint`` in driver.py (monkeypatched to raise
``Crash``, which no ``except`` in slabvol catches, as with SIGKILL), and right after each
external command has taken effect (the fake node raises ``Crash`` instead of returning).
After the crash, the kubelet's retry (or ``gc``) must leave no slab "creating", no leaked
LV, no slab mounted twice, and the claim finished.
"""

import os
import re
import signal

import pytest

import slabvol.driver
from slabvol import slab as S
from slabvol.driver import FAILPOINT_ENV, failpoint
from slabvol.policy import Request

from fakes import Crash, FakeNode, claimed_slab, free_slab, make_driver, pod_dir, pod_uid

MIB = 1024 * 1024
DIR = pod_dir("uid-1")
DRIVER_SOURCE = slabvol.driver.__file__


def req(size_mb=1024, type=S.GRAPH):
    return Request(size_mb=size_mb, fs_type="ext4", type=type, namespace="team-a",
                   pod_uid=pod_uid("uid-1"))


# Each scenario prepares a node and returns ("mount" | "unmount", the operation).

def fresh_mount(node, driver):
    return "mount", lambda: driver.mount(DIR, req())


def reuse_mount(node, driver):
    free_slab(node, "slab_warm", active=False)
    return "mount", lambda: driver.mount(DIR, req())


def evicting_mount(node, driver):
    node.vg_size = 3072 * MIB
    for name, last_used in [("slab_a", 100), ("slab_b", 200), ("slab_c", 300)]:
        free_slab(node, name, fs="xfs", last_used=last_used)
    return "mount", lambda: driver.mount(DIR, req(size_mb=2048))


def anonymous_mount(node, driver):
    return "mount", lambda: driver.mount(DIR, req(type=S.ANONYMOUS))


def unmount_keep(node, driver):
    driver.mount(DIR, req())
    node.used[DIR] = 10.0
    return "unmount", lambda: driver.unmount(DIR)


def unmount_prune(node, driver):
    driver.mount(DIR, req())
    node.used[DIR] = 90.0
    return "unmount", lambda: driver.unmount(DIR)


def unmount_anonymous(node, driver):
    driver.mount(DIR, req(type=S.ANONYMOUS))
    return "unmount", lambda: driver.unmount(DIR)


SCENARIOS = [fresh_mount, reuse_mount, evicting_mount, anonymous_mount, unmount_keep,
             unmount_prune, unmount_anonymous]

# The scenario that passes each failpoint in driver.py.
FAILPOINTS = {
    "mount:after-evict": [evicting_mount],
    "mount:after-lvcreate": [fresh_mount, anonymous_mount],
    "mount:after-mkfs": [fresh_mount],
    "mount:after-claim": [fresh_mount, reuse_mount],
    "mount:after-mount": [fresh_mount, reuse_mount],
    "unmount:after-umount": [unmount_keep, unmount_prune, unmount_anonymous],
}


@pytest.fixture
def setup(fs, config):
    fs.create_dir(DIR)

    def setup(scenario):
        node = FakeNode()
        driver = make_driver(node, config)
        kind, operation = scenario(node, driver)
        node.calls.clear()
        return node, driver, kind, operation
    return setup


def slabs_in(node, state):
    return sorted(name for name in node.lvs if node.state(name) == state)


def assert_repaired(node, driver, kind):
    """The state a successful mount/unmount of DIR leaves, with nothing left to repair."""
    node.check_invariants()
    assert slabs_in(node, "creating") == []
    if kind == "mount":
        mounted = node.mounted_at(DIR)
        assert mounted is not None, "the retried mount did not mount"
        (owner,) = [n for n in node.lvs if node.device(n) == mounted.device]
        assert node.state(owner) == "in-use"
        assert S.decode(node.slab_tags(owner)["dir"]) == DIR
        assert slabs_in(node, "in-use") == [owner]
    else:
        assert node.mounted_at(DIR) is None
        assert slabs_in(node, "in-use") == []
    for name in node.lvs:  # no anonymous slab left behind once its pod is done
        if node.slab_tags(name).get("type") == S.ANONYMOUS:
            assert kind == "mount" and node.state(name) == "in-use", name
    node.calls.clear()
    assert driver.gc().repaired == [], "gc still found something to repair"


def test_the_failpoint_table_covers_every_failpoint_in_driver_py():
    with open(DRIVER_SOURCE, encoding="utf-8") as handle:
        names = set(re.findall(r'failpoint\("([^"]+)"\)', handle.read()))
    assert names == set(FAILPOINTS)


def crash_at(monkeypatch, name):
    hits = []

    def fake(point):
        if point == name and not hits:
            hits.append(point)
            raise Crash(f"killed at {point}")
    monkeypatch.setattr(slabvol.driver, "failpoint", fake)
    return hits


@pytest.mark.parametrize("name, scenario", [
    (name, scenario) for name, scenarios in FAILPOINTS.items() for scenario in scenarios],
    ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_the_retry_after_a_crash_at_a_failpoint_finishes_the_job(setup, monkeypatch, name,
                                                                 scenario):
    node, driver, kind, operation = setup(scenario)
    hits = crash_at(monkeypatch, name)
    with pytest.raises(Crash):
        operation()
    assert hits == [name]
    operation()
    assert_repaired(node, driver, kind)


@pytest.mark.parametrize("name, scenario", [
    (name, scenario) for name, scenarios in FAILPOINTS.items() for scenario in scenarios],
    ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_gc_after_a_crash_at_a_failpoint_then_the_retry_finishes_the_job(setup, monkeypatch,
                                                                        name, scenario):
    node, driver, kind, operation = setup(scenario)
    crash_at(monkeypatch, name)
    with pytest.raises(Crash):
        operation()
    driver.gc()
    assert slabs_in(node, "creating") == []
    operation()
    assert_repaired(node, driver, kind)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_a_crash_right_after_any_command_is_repaired_by_the_retry(setup, scenario):
    node, driver, kind, operation = setup(scenario)
    operation()
    steps = len(node.calls)
    baseline_lvs = len(node.lvs)
    assert steps >= 2
    for step in range(1, steps + 1):
        node, driver, kind, operation = setup(scenario)
        node.crash_after = step
        with pytest.raises(Crash):
            operation()
        operation()
        assert_repaired(node, driver, kind)
        if kind == "mount":
            assert len(node.lvs) == baseline_lvs, f"an LV leaked after a crash at step {step}"


@pytest.mark.parametrize("scenario", [fresh_mount, reuse_mount, anonymous_mount],
                         ids=lambda s: s.__name__)
def test_a_crashed_mount_whose_pod_is_gone_is_cleaned_up_by_gc(setup, fs, scenario):
    node, driver, kind, operation = setup(scenario)
    operation()
    steps = len(node.calls)
    for step in range(1, steps + 1):
        node, driver, kind, operation = setup(scenario)
        node.crash_after = step
        with pytest.raises(Crash):
            operation()
        if node.mounted_at(DIR) is not None:
            driver.unmount(DIR)  # mounted: the kubelet tears it down with unmount
        os.rmdir(DIR)  # the pod is gone
        driver.gc()
        node.check_invariants()
        assert slabs_in(node, "creating") == slabs_in(node, "in-use") == []
        assert all(node.slab_tags(n).get("type") != S.ANONYMOUS for n in node.lvs)
        assert driver.gc().repaired == []
        fs.create_dir(DIR)


def test_a_reboot_leaves_an_unmounted_inactive_claim_that_gc_frees(fs, config):
    node = FakeNode()
    claimed_slab(node, "slab_a", pod_dir("uid-gone"), active=False)
    repairs = make_driver(node, config).gc().repaired
    assert [r.slab.lv_name for r in repairs] == ["slab_a"]
    assert node.state("slab_a") == "free"
    assert {"ns", "key", "size_mb", "fs", "type"} <= set(node.slab_tags("slab_a"))


# -- the failpoint hook itself ----------------------------------------------------------

def test_a_failpoint_kills_the_process_with_sigkill_when_named(monkeypatch):
    killed = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: killed.append((pid, sig)))
    monkeypatch.setenv(FAILPOINT_ENV, "mount:after-claim")
    failpoint("mount:after-mkfs")
    assert killed == []
    failpoint("mount:after-claim")
    assert killed == [(os.getpid(), signal.SIGKILL)]


def test_a_failpoint_does_nothing_without_the_variable(monkeypatch):
    killed = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: killed.append((pid, sig)))
    monkeypatch.delenv(FAILPOINT_ENV, raising=False)
    failpoint("mount:after-claim")
    assert killed == []
