"""Issue 10, item 2: every LVM command looks only at the VG's own devices (slabvol.lvmscan,
applied in one place, lvm.Lvm._run). The exact argv, the learning and its cache, the
devices file, and a device renamed under slabvol's feet; the fake node behaves as real
LVM did in tests/fixtures/lvm/capture_boot4.sh."""

import json
import os
import stat

import pytest

from slabvol.lvm import ROUTINE, STRUCTURAL, Lvm, VgNotFound
from slabvol.lvmscan import (ALL, DEVICES, DEVICES_FILE, FILTER, DeviceScan, Scope,
                             filter_config)

from fakes import FakeNode

CACHE = "/run/slabvol/slabvol.devices.json"
LEARN = [["lvm", "version"], ["lvmconfig", "--typeconfig", "full", "devices"],
         ["vgs", "--reportformat", "json", "-o", "pv_name", "slabvol"]]


def report_argv():
    """The report Lvm runs (pinned in test_lvm.py), unnarrowed."""
    node = FakeNode()
    node.add_lv("slab_1", 4)
    Lvm(node, "slabvol").report()
    assert len(node.calls) == 1
    return node.calls[0]


REPORT = report_argv()


def narrowed(*devices):
    return Scope(DEVICES, devices).apply(REPORT)


@pytest.fixture
def root_dir(fs):
    fs.create_dir("/run/slabvol")
    os.chmod("/run/slabvol", 0o700)


def one_lv():
    """A node whose VG holds an LV, so that a report is one `vgs`."""
    node = FakeNode()
    node.add_lv("slab_1", 4)
    return node


def scanned(node):
    return Lvm(node, "slabvol", DeviceScan(node, "slabvol", CACHE))


def cached():
    with open(CACHE) as handle:
        return json.load(handle)


# -- the exact argv ------------------------------------------------------------------------

def test_devices_go_right_after_the_program_once_per_pv():
    scope = Scope(DEVICES, ("/dev/loop0", "/dev/loop1"))
    assert scope.apply(["lvchange", *ROUTINE, "--addtag", "t", "slabvol/slab_1"]) == [
        "lvchange", "--devices", "/dev/loop0", "--devices", "/dev/loop1",
        "--config", "backup { archive = 0 }", "--addtag", "t", "slabvol/slab_1"]


def test_a_filter_joins_the_commands_one_config():
    """LVM refuses a second --config (captured: lvchange_config_twice, rc 3); the merged
    form works (lvchange_filter_merged)."""
    scope = Scope(FILTER, ("/dev/loop0",))
    assert scope.apply(["lvremove", *STRUCTURAL, "--yes", "slabvol/slab_1"]) == [
        "lvremove", "--config", "backup { retain_min = 20 retain_days = 0 } devices { filter "
        '= [ "a|^/dev/loop0$|", "r|.*|" ] }', "--yes", "slabvol/slab_1"]
    assert scope.apply(["vgs", "-o", "vg_name", "slabvol"]) == [
        "vgs", "--config", 'devices { filter = [ "a|^/dev/loop0$|", "r|.*|" ] }',
        "-o", "vg_name", "slabvol"]


def test_a_filter_brackets_the_regex_characters_of_a_name():
    assert filter_config(["/dev/mapper/a.b+c", "/dev/sdb"]) == (
        'devices { filter = [ "a|^/dev/mapper/a[.]b[+]c$|", "a|^/dev/sdb$|", "r|.*|" ] }')


@pytest.mark.parametrize("kind", [ALL, DEVICES_FILE])
def test_all_and_the_devices_file_add_nothing(kind):
    argv = ["lvchange", "--activate", "y", "slabvol/slab_1"]
    assert Scope(kind).apply(argv) == argv


def test_every_command_of_the_adapter_is_narrowed(root_dir):
    node = FakeNode()
    lvm = scanned(node)
    lvm.report()
    lvm.create("slab_1", 4 << 20, ["slabvol.v=1"])
    lvm.change_tags("slab_1", ["slabvol.v=1"], ["slabvol.v=2"])
    lvm.activate("slab_1")
    lvm.remove("slab_1")
    lvm_calls = node.calls[len(LEARN):]
    assert node.calls[:len(LEARN)] == LEARN
    assert lvm_calls[0] == narrowed("/dev/loop0")
    assert [argv[:3] for argv in lvm_calls[1:]] == [[argv[0], "--devices", "/dev/loop0"]
                                                    for argv in lvm_calls[1:]]


# -- learning and the cache ----------------------------------------------------------------

def test_learning_runs_once_and_is_cached_root_only(root_dir):
    node = FakeNode()
    assert DeviceScan(node, "slabvol", CACHE).scope() == Scope(DEVICES, ("/dev/loop0",))
    assert node.calls == LEARN
    assert cached() == {"kind": DEVICES, "devices": ["/dev/loop0"], "vg": "slabvol"}
    assert stat.S_IMODE(os.stat(CACHE).st_mode) == 0o600
    node.calls.clear()
    assert DeviceScan(node, "slabvol", CACHE).scope() == Scope(DEVICES, ("/dev/loop0",))
    assert node.calls == []  # the next process reads the file


def test_an_lvm_without_devices_gets_a_filter(root_dir):
    node = FakeNode(lvm_version="2.03.11(2) (2021-01-08)")
    assert DeviceScan(node, "slabvol", CACHE).scope() == Scope(FILTER, ("/dev/loop0",))
    assert node.calls == [LEARN[0], LEARN[2]]  # no devices file before 2.03.12


def test_the_devices_file_in_use_is_left_to_lvm(root_dir, fs):
    node = one_lv()
    node.use_devicesfile = 1
    fs.create_file("/etc/lvm/devices/system.devices")
    lvm = scanned(node)
    lvm.report()
    assert node.calls == LEARN[:2] + [REPORT]
    assert cached()["kind"] == DEVICES_FILE


def test_a_devices_file_setting_without_the_file_is_not_in_use(root_dir):
    """LVM ignores a missing devices file (lib/device/dev-cache.c: "Devices file not
    found, ignoring."), so slabvol narrows the scan itself."""
    node = FakeNode(use_devicesfile=1)
    assert DeviceScan(node, "slabvol", CACHE).scope() == Scope(DEVICES, ("/dev/loop0",))


def test_a_cache_in_a_dir_others_can_write_is_neither_read_nor_written(fs):
    fs.create_dir("/run/slabvol")
    os.chmod("/run/slabvol", 0o777)
    fs.create_file(CACHE, contents=json.dumps(
        {"kind": DEVICES, "devices": ["/dev/evil"], "vg": "slabvol"}))
    node = FakeNode()
    assert DeviceScan(node, "slabvol", CACHE).scope() == Scope(DEVICES, ("/dev/loop0",))
    assert cached()["devices"] == ["/dev/evil"]


@pytest.mark.parametrize("text", [
    '{"kind": "devices", "devices": ["/dev/loop9"], "vg": "othervg"}',
    '{"kind": "devices", "devices": [], "vg": "slabvol"}',
    '{"kind": "devi', "garbage"])
def test_a_cache_of_another_vg_or_a_broken_one_is_learned_again(root_dir, fs, text):
    fs.create_file(CACHE, contents=text, st_mode=stat.S_IFREG | 0o600)
    node = FakeNode()
    assert DeviceScan(node, "slabvol", CACHE).scope() == Scope(DEVICES, ("/dev/loop0",))
    assert cached()["devices"] == ["/dev/loop0"]


def test_learning_a_missing_vg_is_vg_not_found(root_dir):
    node = FakeNode(missing_vg=True)
    with pytest.raises(VgNotFound, match="volume group 'slabvol' not found"):
        scanned(node).report()


# -- renamed devices -----------------------------------------------------------------------

def test_a_renamed_device_is_learned_again_and_the_command_rerun(root_dir):
    node = one_lv()
    scanned(node).report()
    node.rename_pvs("/dev/loop3")  # loop0 -> loop3
    node.calls.clear()
    vg, _ = scanned(node).report()
    assert vg.name == "slabvol"
    assert node.calls == [narrowed("/dev/loop0"), *LEARN,
                          narrowed("/dev/loop3")]
    assert cached()["devices"] == ["/dev/loop3"]


def test_a_change_that_lost_the_vg_is_rerun_after_learning(root_dir):
    node = FakeNode()
    node.add_lv("slab_1", 4)
    scanned(node).report()
    node.rename_pvs("/dev/loop3")
    scanned(node).change_tags("slab_1", [], ["slabvol.x=1"])
    assert "slabvol.x=1" in node.lvs["slab_1"].tags
    assert node.calls[-1][:3] == ["lvchange", "--devices", "/dev/loop3"]


def test_a_report_missing_one_of_two_pvs_is_learned_again(root_dir):
    """Captured: vgs_devices_renamed_partial (rc 0 and LVM's missing-PV warning)."""
    node = one_lv()
    node.pvs = [("uuid-a", "/dev/loop0"), ("uuid-b", "/dev/loop1")]
    scanned(node).report()
    node.rename_pvs("/dev/loop1", "/dev/loop3")
    node.calls.clear()
    scanned(node).report()
    assert node.calls[-1] == narrowed("/dev/loop1", "/dev/loop3")
    assert cached()["devices"] == ["/dev/loop1", "/dev/loop3"]


def test_a_vg_gone_for_good_is_vg_not_found_after_one_full_scan(root_dir):
    node = FakeNode()
    scanned(node).report()
    node.missing_vg = True
    node.calls.clear()
    with pytest.raises(VgNotFound):
        scanned(node).report()
    assert node.calls == [narrowed("/dev/loop0"), *LEARN]


# -- wiring ----------------------------------------------------------------------------------

def test_the_driver_on_a_real_node_narrows_beside_the_lock(config):
    from slabvol.driver import Driver
    scan = Driver(config).lvm.scan
    assert (scan.vg, scan.path) == ("slabvol", CACHE)


def test_a_driver_with_an_injected_runner_scans_as_before(config):
    from slabvol.driver import Driver
    assert Driver(config, runner=FakeNode()).lvm.scan is None


def test_after_lvm_the_scope_follows_the_command_name():
    """`lvm CMD`: LVM takes options only after the command."""
    argv = ["lvm", "fullreport", "--reportformat", "json", "slabvol"]
    assert Scope(DEVICES, ("/dev/loop0",)).apply(argv) == [
        "lvm", "fullreport", "--devices", "/dev/loop0", "--reportformat", "json", "slabvol"]
    assert Scope(FILTER, ("/dev/loop0",)).apply(argv) == [
        "lvm", "fullreport", "--config", 'devices { filter = [ "a|^/dev/loop0$|", "r|.*|" ] }',
        "--reportformat", "json", "slabvol"]


def test_without_an_lvm_conf_the_defaults_decide(root_dir):
    """No lvm.conf: `--typeconfig full` fails (captured in boot 4) and LVM runs on its
    defaults, which `--typeconfig default` prints commented out."""
    node = FakeNode(no_lvm_conf=True)
    assert DeviceScan(node, "slabvol", CACHE).scope() == Scope(DEVICES, ("/dev/loop0",))
    assert node.calls == [LEARN[0], LEARN[1], ["lvmconfig", "--typeconfig", "default",
                                                "devices"], LEARN[2]]
