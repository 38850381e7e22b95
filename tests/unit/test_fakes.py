"""The fake node must stay honest: the Runner's signatures, and real LVM's and util-linux's
exit codes and messages as captured in tests/fixtures/lvm/captures.json."""

import inspect
import json
import os
import re

import pytest

from slabvol.errors import CommandError
from slabvol.lvm import LV_FIELDS, REPORT_FLAGS, VG_FIELDS, parse_report, report_argv
from slabvol.lvmscan import DEVICES_DEFAULT_ARGV, DEVICES_FILE_ARGV, parse_lvmconfig
from slabvol.process import Result, Runner

from fakes import FakeNode, free_slab

FIXTURES = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures", "lvm")


with open(os.path.join(FIXTURES, "captures.json"), encoding="utf-8") as _handle:
    CAPTURES = {c["name"]: c for c in json.load(_handle)}  # read before pyfakefs hides it


def capture(name):
    return CAPTURES[name]


@pytest.mark.parametrize("method", ["call", "run"])
def test_the_fake_has_the_runners_signatures(method):
    assert inspect.signature(getattr(FakeNode, method)) == inspect.signature(
        getattr(Runner, method))


def test_the_fake_returns_results_and_raises_command_errors():
    node = FakeNode()
    result = node.call(["lvremove", "--yes", "slabvol/nosuch"])
    assert isinstance(result, Result) and result.returncode == 5
    with pytest.raises(CommandError) as caught:
        node.run(["lvremove", "--yes", "slabvol/nosuch"])
    assert caught.value.stderr == result.stderr


def vgs(vg, fields=VG_FIELDS + LV_FIELDS):
    return ["vgs", *REPORT_FLAGS, "-o", ",".join(fields), vg]


def assert_like(result, name):
    real = capture(name)
    assert (result.returncode, result.stderr) == (real["rc"], real["stderr"])


def test_a_missing_vg_looks_like_real_lvm():
    result = FakeNode(vg_name="nosuchvg", missing_vg=True).call(vgs("nosuchvg"))
    assert_like(result, "vgs_with_lv_fields_nosuchvg")
    assert result.stdout == capture("vgs_with_lv_fields_nosuchvg")["stdout"]


def test_an_empty_vg_gives_no_rows_with_lv_fields_like_real_lvm():
    node = FakeNode(vg_size=1069547520)
    assert node.call(vgs("slabvol")).stdout == capture("vgs_with_lv_fields_empty")["stdout"]
    assert node.call(vgs("slabvol", VG_FIELDS)).stdout == capture("vgs_empty")["stdout"]


@pytest.mark.parametrize("argv, name", [
    (["lvremove", "--yes", "slabvol/nosuch"], "lvremove_nosuch"),
    (["lvchange", "--addtag", "slabvol.a=b", "slabvol/nosuch"], "lvchange_nosuch"),
    (["lvchange", "--addtag", "slabvol.k=a~b", "slabvol/slab_aaaa"], "tag_tilde"),
])
def test_lv_errors_look_like_real_lvm(argv, name):
    assert_like(FakeNode().call(argv), name)


def test_a_duplicate_name_looks_like_real_lvm():
    node = FakeNode()
    node.add_lv("slab_bbbb", 200)
    argv = ["lvcreate", "--yes", "--wipesignatures", "y", "--zero", "y", "--name", "slab_bbbb",
            "--size", "4194304b", "slabvol"]
    assert_like(node.call(argv), "lvcreate_dup_name")


def test_no_room_looks_like_real_lvm():
    node = FakeNode(vg_size=1069547520)
    node.add_lv("used", 308)  # leaves 178 extents, as in the capture
    argv = ["lvcreate", "--yes", "--wipesignatures", "y", "--zero", "y", "--name", "big",
            "--size", f"{5 * 1024 ** 3}b", "slabvol"]
    assert_like(node.call(argv), "lvcreate_too_big")


def test_removing_a_mounted_lv_looks_like_real_lvm(fs):
    fs.create_dir("/mnt/x")
    node = FakeNode()
    free_slab(node, "slab_bbbb")
    node.run(["mount", "-t", "ext4", "/dev/slabvol/slab_bbbb", "/mnt/x"])
    assert_like(node.call(["lvremove", "--yes", "slabvol/slab_bbbb"]), "lvremove_mounted")
    assert node.mounted_at("/mnt/x").source == "/dev/mapper/slabvol-slab_bbbb"


def test_an_lv_held_open_in_another_namespace_looks_like_real_lvm():
    node = FakeNode()
    free_slab(node, "slab_held").held = True
    free_slab(node, "slab_idle")
    assert_like(node.call(["lvremove", "--yes", "slabvol/slab_held"]),
                "lvremove_held_elsewhere")
    _, lvs = parse_report(node.call(vgs("slabvol")).stdout, "slabvol")
    _, real = parse_report(capture("vgs_device_open_held_elsewhere")["stdout"], "slabvol")
    assert {lv.name: lv.open for lv in lvs} == {lv.name: lv.open for lv in real}


def test_a_mount_through_a_symlink_is_recorded_at_the_resolved_path_like_the_kernel(fs):
    fs.create_dir("/tmp/real/pods")
    fs.create_symlink("/tmp/link", "/tmp/real")
    node = FakeNode()
    free_slab(node, "slab_held")
    node.run(["mount", "-t", "ext4", "/dev/slabvol/slab_held", "/tmp/link/pods"])
    real = [line for line in capture("mountinfo_through_symlink")["stdout"].splitlines()
            if "slab_held" in line]
    assert len(real) == 1 and " /tmp/real/pods " in real[0]
    assert [m.mountpoint for m in node.mounts] == ["/tmp/real/pods"]


def test_umount_errors_look_like_real_util_linux():
    node = FakeNode()
    assert_like(node.call(["umount", "/mnt/x"]), "umount_not_mounted")
    node.busy_dirs.add("/mnt/x")
    assert_like(node.call(["umount", "/mnt/x"]), "umount_busy")


def lv_tags(report):
    return {lv["lv_name"]: lv["lv_tags"] for lv in json.loads(report)["report"][0]["lv"]}


def test_tags_come_back_sorted_and_changed_like_real_lvm():
    """As captured: slab_aaaa and slab_bbbb created with their tags in the driver's order
    (lvcreate_slab_aaaa, _bbbb) come back sorted (lvs_three); a --deltag with an --addtag
    swaps the state tag (lvchange_tag_swap, lvs_after_tag_swap); adding a tag the LV has
    already succeeds (lvchange_addtag_duplicate)."""
    node = FakeNode(vg_size=1069547520)
    for name in ("slab_aaaa", "slab_bbbb"):
        created = capture(f"lvcreate_{name}")["argv"]
        tags = [tag for flag, tag in zip(created, created[1:]) if flag == "--addtag"]
        assert tags != sorted(tags)
        size_mb = int(created[created.index("-L") + 1].rstrip("m"))
        node.run(["lvcreate", "--yes", "--wipesignatures", "y", "--zero", "y", "--name", name,
                  "--size", f"{size_mb * 1024 * 1024}b",
                  *[arg for tag in tags for arg in ("--addtag", tag)], "slabvol"])
    real = lv_tags(capture("lvs_three")["stdout"])
    assert lv_tags(node.call(report_argv("slabvol")).stdout) == {
        name: real[name] for name in ("slab_aaaa", "slab_bbbb")}
    swap = node.call(capture("lvchange_tag_swap")["argv"])
    assert_like(swap, "lvchange_tag_swap")
    assert lv_tags(node.call(report_argv("slabvol")).stdout)["slab_aaaa"] == \
        lv_tags(capture("lvs_after_tag_swap")["stdout"])["slab_aaaa"]
    duplicate = node.call(capture("lvchange_addtag_duplicate")["argv"])
    assert_like(duplicate, "lvchange_addtag_duplicate")
    assert duplicate.stdout == capture("lvchange_addtag_duplicate")["stdout"]


# -- one report per call: lvm fullreport (issue 10 item 3; captured in boot 5) ---------------

def test_a_fullreport_of_an_empty_vg_has_its_row_like_real_lvm():
    from slabvol.lvm import report_argv
    node = FakeNode(vg_size=1069547520)
    assert node.call(report_argv("slabvol")).stdout == capture("fullreport_empty")["stdout"]


def test_a_fullreport_of_a_missing_vg_looks_like_real_lvm():
    from slabvol.lvm import report_argv
    result = FakeNode(vg_name="nosuchvg", missing_vg=True).call(report_argv("nosuchvg"))
    assert_like(result, "fullreport_nosuchvg")
    assert result.stdout == capture("fullreport_nosuchvg")["stdout"]


def test_a_fullreport_with_lvs_looks_like_real_lvm(fs):
    """As captured: slab_a free, slab_b mounted, `other` untagged and inactive; LVs sorted by
    name, an inactive LV's open state "unknown", one PV segment per LV and the free one."""
    from slabvol.lvm import report_argv
    fs.create_dir("/tmp/mnt5/b")
    node = FakeNode(vg_size=1069547520)
    node.add_lv("slab_a", 8, ["slabvol.state=free", "slabvol.size_mb=8"])
    node.add_lv("slab_b", 12, ["slabvol.state=in-use"])
    node.add_lv("other", 4, active=False)
    node.run(["mount", "-t", "ext4", "/dev/slabvol/slab_b", "/tmp/mnt5/b"])
    fake = json.loads(node.call(report_argv("slabvol")).stdout)
    real = json.loads(capture("fullreport_three")["stdout"])
    assert fake == real


# -- the device scope (issue 10 item 2; captured in boot 4, capture_boot4.sh) ----------------

UUID = re.compile(r"[A-Za-z0-9]{6}(-[A-Za-z0-9]{4}){5}-[A-Za-z0-9]{6}")


def scoped_node():
    """As in boot 4: VG slabvol on /dev/loop0 and /dev/loop1 (othervg on /dev/loop2)."""
    node = FakeNode(pvs=[("uuid-0", "/dev/loop0"), ("uuid-1", "/dev/loop1")])
    node.add_lv("slab_a", 8)
    return node


def assert_like_but_uuids(result, name):
    real = capture(name)
    assert result.returncode == real["rc"]
    assert UUID.sub("UUID", result.stderr.replace("uuid-1", "SCJc8W-xu4R-LhBT-cu8q-9OyN-WBmJ-"
                                                  "dZm9gQ")) == UUID.sub("UUID", real["stderr"])


def with_devices(argv, *devices):
    return [argv[0], *[p for d in devices for p in ("--devices", d)], *argv[1:]]


def test_devices_of_the_whole_vg_change_nothing():
    node = scoped_node()
    assert node.call(with_devices(vgs("slabvol"), "/dev/loop0", "/dev/loop1")).stdout == (
        node.call(vgs("slabvol")).stdout)
    assert_like(node.call(with_devices(vgs("slabvol"), "/dev/loop0", "/dev/loop1")),
                "vgs_devices_both")


@pytest.mark.parametrize("argv, name", [
    (vgs("slabvol"), "vgs_devices_other_only"),
    (["lvchange", "--config", "backup { archive = 0 }", "--addtag", "slabvol.y=1",
      "slabvol/slab_a"], "lvchange_devices_other_only"),
    (["lvcreate", "--yes", "--wipesignatures", "y", "--zero", "y", "--name", "slab_b",
      "--size", "4194304b", "slabvol"], "lvcreate_devices_other_only"),
    (["lvremove", "--yes", "slabvol/slab_a"], "lvremove_devices_other_only"),
])
def test_devices_without_the_vgs_pvs_hide_the_vg_like_real_lvm(argv, name):
    node = scoped_node()
    result = node.call(with_devices(argv, "/dev/loop2"))
    assert_like(result, name)
    assert node.lvs.keys() == {"slab_a"} and node.lvs["slab_a"].tags == []
    if argv[0] == "vgs":
        assert json.loads(result.stdout) == json.loads(capture(name)["stdout"])


def test_devices_with_some_of_the_pvs_warn_of_the_others_like_real_lvm():
    node = scoped_node()
    result = node.call(with_devices(vgs("slabvol"), "/dev/loop0"))
    assert_like_but_uuids(result, "vgs_devices_one_of_two")
    node.rename_pvs("/dev/loop1", "/dev/loop3")  # captured: loop0 -> loop1, loop1 -> loop3
    result = node.call(with_devices(vgs("slabvol"), "/dev/loop0", "/dev/loop1"))
    assert result.returncode == 0 and "is missing PV uuid-1 (last written to /dev/loop3)" in (
        result.stderr)  # LVM names the device last written, the fake the present one
    assert_like(node.call(with_devices(vgs("slabvol"), "/dev/loop0")),
                "vgs_devices_renamed_gone")
    assert_like(node.call(with_devices(vgs("slabvol"), "/dev/loop1", "/dev/loop3")),
                "vgs_devices_relearned")


def test_a_filter_in_the_one_config_narrows_like_real_lvm():
    node = scoped_node()
    config = ('backup { archive = 0 } devices { filter = [ "a|^/dev/loop0$|", '
              '"a|^/dev/loop1$|", "r|.*|" ] }')
    result = node.call(["lvchange", "--config", config, "--addtag", "slabvol.x=1",
                        "slabvol/slab_a"])
    assert_like(result, "lvchange_filter_merged")
    assert result.stdout == capture("lvchange_filter_merged")["stdout"]
    assert node.configs == [("lvchange", "backup { archive = 0 }")]
    only_other = 'devices { filter = [ "a|^/dev/loop2$|", "r|.*|" ] }'
    assert_like(node.call([*vgs("slabvol")[:1], "--config", only_other, *vgs("slabvol")[1:]]),
                "vgs_filter_other_only")


def test_learning_looks_like_real_lvm():
    node = scoped_node()
    learn = ["vgs", "--reportformat", "json", "-o", "pv_name", "slabvol"]
    assert learn == capture("vgs_pv_names")["argv"]
    assert node.call(learn).stdout == capture("vgs_pv_names")["stdout"]
    missing = FakeNode(vg_name="nosuchvg", missing_vg=True).call(
        ["vgs", "--reportformat", "json", "-o", "pv_name", "nosuchvg"])
    assert_like(missing, "vgs_pv_names_nosuchvg")
    assert missing.stdout == capture("vgs_pv_names_nosuchvg")["stdout"]
    version = node.call(["lvm", "version"]).stdout.splitlines()
    assert version == capture("lvm_version_boot4")["stdout"].splitlines()[:len(version)]



def test_lvmconfig_looks_like_real_lvm():
    """The boot-4 guest has no lvm.conf: `--typeconfig full` fails there, the defaults
    print commented out; with an lvm.conf that turns the devices file on, full says so."""
    assert capture("lvmconfig_devices")["argv"] == list(DEVICES_FILE_ARGV)
    assert_like(FakeNode(no_lvm_conf=True).call(list(DEVICES_FILE_ARGV)), "lvmconfig_devices")
    for node, name, argv in [
            (FakeNode(), "lvmconfig_devices_default", DEVICES_DEFAULT_ARGV),
            (FakeNode(use_devicesfile=1), "lvmconfig_devices_enabled_no_file",
             DEVICES_FILE_ARGV)]:
        assert capture(name)["argv"] == list(argv)
        real = parse_lvmconfig(capture(name)["stdout"])
        fake = parse_lvmconfig(node.call(list(argv)).stdout)
        assert fake == {k: real[k] for k in fake}


def test_creating_a_vg_looks_like_real_lvm():
    node = FakeNode(missing_vg=True, pvs=[])
    pvcreate = node.call(["pvcreate", "--metadatasize", "64m", "/dev/loop0"])
    vgcreate = node.call(["vgcreate", "slabvol", "/dev/loop0"])
    for result, name in ((pvcreate, "setup_pvcreate"), (vgcreate, "setup_vgcreate")):
        assert_like(result, name)
        assert result.stdout == capture(name)["stdout"]
    assert node.pv_owners() == {"/dev/loop0": "slabvol"}
    assert parse_report(node.call(report_argv("slabvol")).stdout, "slabvol")[1] == []


@pytest.mark.parametrize("argv", [["vgchange", "--activate", "y", "nosuchvg"],
                                  ["vgremove", "nosuchvg"]])
def test_vg_commands_on_a_missing_vg_fail_like_real_lvm(argv):
    assert_like(FakeNode().call(argv), "vgs_nosuchvg")

