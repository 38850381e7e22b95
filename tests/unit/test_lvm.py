"""The LVM adapter: the exact argv it builds, its parsing of real captured reports
(tests/fixtures/lvm/, see the README there) and its classification of real LVM errors."""

import json
import os

import pytest

from slabvol import slab as S
from slabvol.errors import CommandError, NoRoom, SlabvolError
from slabvol.lvm import (ROUTINE, STRUCTURAL, LogicalVolume, Lvm, LvNotFound, VgNotFound,
                         VolumeGroup, parse_report)
from slabvol.process import Result

from fakes import report_json

FIXTURES = os.path.join(os.path.dirname(__file__), os.pardir, "fixtures", "lvm")
REPORT = ["--reportformat", "json", "--units", "b", "--nosuffix"]
VG_ONLY_FIELDS = "vg_name,vg_size,vg_free,vg_extent_size"


def fixture(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as handle:
        return handle.read()


def capture(name):
    with open(os.path.join(FIXTURES, "captures.json"), encoding="utf-8") as handle:
        return next(c for c in json.load(handle) if c["name"] == name)


class Replay:
    """A runner that answers each call with the next real capture (or given output)."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []

    def call(self, argv):
        self.calls.append(list(argv))
        answer = self.answers.pop(0)
        if isinstance(answer, str):
            answer = capture(answer)
            answer = (answer["rc"], answer["stdout"], answer["stderr"])
        return Result(tuple(argv), *answer)

    def run(self, argv):
        result = self.call(argv)
        if not result.ok:
            raise CommandError(result.argv, result.returncode, result.stderr, result.stdout)
        return result


OK = (0, "", "")
MIB = 1024 * 1024


# -- argv -------------------------------------------------------------------------------

LV_ONLY_FIELDS = ("lv_name,lv_path,lv_size,lv_tags,lv_active,lv_kernel_major,lv_kernel_minor,"
                  "lv_device_open")
FULLREPORT = ["lvm", "fullreport", *REPORT, "--configreport", "vg", "-o", VG_ONLY_FIELDS,
              "--configreport", "lv", "-o", LV_ONLY_FIELDS, "--configreport", "pv", "-o", "pv_name",
              "--configreport", "pvseg", "-o", "pvseg_start", "--configreport", "seg", "-o",
              "seg_start"]


def test_report_runs_one_lvm_fullreport_with_a_field_list_per_section():
    runner = Replay("fullreport_three")
    vg, lvs = Lvm(runner, "slabvol").report()
    assert runner.calls == [[*FULLREPORT, "slabvol"]]
    assert [lv.name for lv in lvs] == ["other", "slab_a", "slab_b"]  # sorted by LVM


def test_report_of_a_vg_without_lvs_is_one_command_too():
    runner = Replay("fullreport_empty")
    vg, lvs = Lvm(runner, "slabvol").report()
    assert runner.calls == [[*FULLREPORT, "slabvol"]]
    assert (vg, lvs) == (VolumeGroup("slabvol", 1069547520, 1069547520, 4194304), [])


def test_parse_report_reads_a_fullreport_with_every_lv_field():
    vg, lvs = parse_report(capture("fullreport_three")["stdout"], "slabvol")
    assert vg == VolumeGroup("slabvol", 1069547520, 1069547520 - 24 * MIB, 4194304)
    by_name = {lv.name: lv for lv in lvs}
    assert by_name["slab_a"].tags == ("slabvol.size_mb=8", "slabvol.state=free")
    assert (by_name["slab_a"].size, by_name["slab_a"].active, by_name["slab_a"].open) == (
        8 * MIB, True, False)
    assert by_name["slab_b"].open and by_name["slab_b"].major is not None
    assert by_name["slab_b"].path == "/dev/slabvol/slab_b"
    assert (by_name["other"].active, by_name["other"].major, by_name["other"].tags) == (
        False, None, ())


def test_parse_report_of_a_fullreport_of_two_vgs_takes_only_its_own():
    text = capture("fullreport_two_vgs")["stdout"]
    _, mine = parse_report(text, "slabvol")
    _, theirs = parse_report(text, "othervg")
    assert [lv.name for lv in mine] == ["other", "slab_a", "slab_b"]
    assert [lv.name for lv in theirs] == ["theirs"]


def test_create_passes_name_size_in_bytes_and_every_tag():
    runner = Replay(OK)
    Lvm(runner, "slabvol").create("slab_1", 1073741824, ["slabvol.v=1", "slabvol.state=creating"])
    assert runner.calls == [[
        "lvcreate", "--config", "backup { retain_min = 20 retain_days = 0 }",
        "--yes", "--wipesignatures", "y", "--zero", "y", "--name", "slab_1",
        "--size", "1073741824b", "--addtag", "slabvol.v=1", "--addtag", "slabvol.state=creating",
        "slabvol"]]


def test_change_tags_deletes_and_adds_in_one_lvchange():
    runner = Replay(OK)
    Lvm(runner, "slabvol").change_tags("slab_1", ["slabvol.state=free", "slabvol.uses=1"],
                                       ["slabvol.state=in-use"])
    assert runner.calls == [[
        "lvchange", "--config", "backup { archive = 0 }",
        "--deltag", "slabvol.state=free", "--deltag", "slabvol.uses=1",
        "--addtag", "slabvol.state=in-use", "slabvol/slab_1"]]


def test_change_tags_without_changes_runs_nothing():
    runner = Replay()
    Lvm(runner, "slabvol").change_tags("slab_1", [], [])
    assert runner.calls == []


def test_activate_runs_lvchange_activate():
    runner = Replay(OK)
    Lvm(runner, "slabvol").activate("slab_1")
    assert runner.calls == [["lvchange", "--activate", "y", "slabvol/slab_1"]]


def test_remove_runs_lvremove_yes_and_reports_removal():
    runner = Replay("lvremove_slab_aaaa")
    assert Lvm(runner, "slabvol").remove("slab_aaaa") is True
    assert runner.calls == [["lvremove", "--config", "backup { retain_min = 20 retain_days = 0 }",
                             "--yes", "slabvol/slab_aaaa"]]


# -- parsing real reports ---------------------------------------------------------------

def test_parse_report_reads_the_vg_and_one_lv_per_row():
    vg, lvs = parse_report(fixture("vgs_with_lv_fields_three.json"), "slabvol")
    assert vg == VolumeGroup("slabvol", 1069547520, 746586112, 4194304)
    assert [lv.name for lv in lvs] == ["slab_aaaa", "slab_bbbb", "other"]
    assert lvs[0] == LogicalVolume(
        "slab_aaaa", "/dev/slabvol/slab_aaaa", 104857600,
        ("slabvol.fs=ext4", "slabvol.last_used=1700000000", "slabvol.ns=default",
         "slabvol.size_mb=100", "slabvol.state=free", "slabvol.type=graph", "slabvol.uses=2",
         "slabvol.v=1"), True, 254, 0)


def test_parse_report_gives_an_untagged_lv_no_tags():
    _, lvs = parse_report(fixture("vgs_with_lv_fields_three.json"), "slabvol")
    assert (lvs[2].name, lvs[2].tags, lvs[2].major, lvs[2].minor) == ("other", (), 254, 2)


def test_parse_report_reads_an_lvs_report_too():
    vg, lvs = parse_report(fixture("lvs_three.json"), "slabvol")
    assert vg.free == 746586112
    assert sorted(lv.name for lv in lvs) == ["other", "slab_aaaa", "slab_bbbb"]


def test_parse_report_of_a_vg_only_report_gives_no_lvs():
    assert parse_report(fixture("vgs_final.json"), "slabvol") == (
        VolumeGroup("slabvol", 1069547520, 155189248, 4194304), [])


def test_parse_report_of_a_report_without_rows_is_vg_not_found():
    with pytest.raises(VgNotFound, match="volume group 'slabvol' not found"):
        parse_report(fixture("vgs_with_lv_fields_empty.json"), "slabvol")


def test_parse_report_ignores_rows_of_another_vg():
    with pytest.raises(VgNotFound):
        parse_report(fixture("vgs_with_lv_fields_three.json"), "othervg")


def test_slabs_read_from_a_real_report_decode_their_tags():
    _, lvs = parse_report(fixture("vgs_with_lv_fields_three.json"), "slabvol")
    slabs = {lv.name: S.Slab.from_lv(lv) for lv in lvs}
    assert slabs["other"] is None
    bbbb = slabs["slab_bbbb"]
    assert (bbbb.state, bbbb.size_mb, bbbb.namespace, bbbb.mount_dir, bbbb.pod_uid,
            bbbb.device) == (S.IN_USE, 200, "default",
                             "/var/lib/kubelet/pods/1234/volumes/ax~vol_plugin/x",
                             "0b5c7e1e-1111-2222-3333-444455556666", (254, 1))


def test_the_fake_nodes_report_is_byte_identical_to_real_lvm():
    real = fixture("vgs_with_lv_fields_three.json")
    rows = json.loads(real)["report"][0]["vg"]
    assert report_json("vg", rows) == real
    assert report_json("vg", []) == fixture("vgs_with_lv_fields_empty.json")


@pytest.mark.parametrize("text", [
    "",
    "  WARNING: Running as a non-root user. Functionality may be unavailable.\n",
    "__TRUNCATED__",
    '{"report": {"vg": []}}',
    '{"reports": []}',
    '[1, 2]',
    '{"report": [{"vg": ["slabvol"]}]}',
    '{"report": [{"vg": null}]}',
], ids=["empty", "not-json", "truncated", "report-not-a-list", "no-report", "list",
        "row-not-an-object", "null-rows"])
def test_a_garbled_report_is_a_clear_error(text):
    if text == "__TRUNCATED__":
        full = fixture("vgs_with_lv_fields_three.json")
        text = full[:len(full) // 2]
    with pytest.raises(SlabvolError, match="could not parse the LVM report for volume group "
                                           "'slabvol'.*run `vgs slabvol` by hand"):
        parse_report(text, "slabvol")


@pytest.mark.parametrize("bad", ['"vg_size":null', '"vg_size":"lots"'])
def test_a_report_without_a_usable_vg_size_is_a_clear_error(bad):
    text = fixture("vgs_final.json").replace('"vg_size":"1069547520"', bad)
    with pytest.raises(SlabvolError, match="lacks a usable") as caught:
        parse_report(text, "slabvol")
    assert not isinstance(caught.value, VgNotFound)


# -- error classification on real exit codes and stderr ---------------------------------

def test_report_of_a_missing_vg_is_vg_not_found_after_one_call():
    runner = Replay("fullreport_nosuchvg")
    with pytest.raises(VgNotFound, match="'nosuchvg' not found on this node; create it"):
        Lvm(runner, "nosuchvg").report()
    assert len(runner.calls) == 1


@pytest.mark.parametrize("name, action", [
    ("lvcreate_nosuchvg", lambda lvm: lvm.create("x", 4194304, [])),
    ("lvremove_nosuchvg", lambda lvm: lvm.remove("x")),
    ("lvchange_nosuchvg", lambda lvm: lvm.change_tags("x", add=["slabvol.state=free"])),
])
def test_every_command_on_a_missing_vg_is_vg_not_found(name, action):
    with pytest.raises(VgNotFound):
        action(Lvm(Replay(name), "nosuchvg"))


def test_removing_an_lv_that_is_gone_counts_as_removed():
    assert Lvm(Replay("lvremove_nosuch"), "slabvol").remove("nosuch") is False


def test_changing_tags_of_a_missing_lv_is_lv_not_found():
    with pytest.raises(LvNotFound, match="slabvol/nosuch does not exist"):
        Lvm(Replay("lvchange_nosuch"), "slabvol").change_tags("nosuch", add=["slabvol.a=b"])


@pytest.mark.parametrize("name", ["lvcreate_too_big", "lvcreate_too_big_just_over"])
def test_lvcreate_without_space_is_no_room(name):
    with pytest.raises(NoRoom, match="has insufficient free space"):
        Lvm(Replay(name), "slabvol").create("big", 5 * 1024 ** 3, [])


@pytest.mark.parametrize("name, action", [
    ("lvremove_mounted", lambda lvm: lvm.remove("slab_bbbb")),
    ("lvcreate_dup_name", lambda lvm: lvm.create("slab_bbbb", 4194304, [])),
    ("tag_tilde", lambda lvm: lvm.change_tags("slab_aaaa", add=["slabvol.k=a~b"])),
])
def test_other_lvm_failures_stay_command_errors_with_their_stderr(name, action):
    with pytest.raises(CommandError) as caught:
        action(Lvm(Replay(name), "slabvol"))
    assert not isinstance(caught.value, (LvNotFound, VgNotFound, NoRoom))
    assert caught.value.stderr == capture(name)["stderr"]
    assert caught.value.returncode == capture(name)["rc"]


# -- issue 8: "open anywhere", and only LVM's own not-found errors ----------------------

@pytest.mark.parametrize("name, held", [("vgs_device_open_mounted", True),
                                        ("vgs_device_open_held_elsewhere", True),
                                        ("vgs_device_open_released", False)])
def test_lv_device_open_is_read_from_the_report(name, held):
    """Captured with the slab mounted, then with only a copy of the mount left in another
    mount namespace (invisible in our mount table), then with that namespace gone."""
    _, lvs = parse_report(fixture(name + ".json"), "slabvol")
    assert {lv.name: lv.open for lv in lvs} == {"slab_held": held, "slab_idle": False}
    assert {lv.name: S.Slab.from_lv(lv).open for lv in lvs}["slab_held"] is held


def test_removing_an_lv_held_open_in_another_namespace_is_a_command_error():
    with pytest.raises(CommandError) as caught:
        Lvm(Replay("lvremove_held_elsewhere"), "slabvol").remove("slab_held")
    assert not isinstance(caught.value, (LvNotFound, VgNotFound))


def test_warnings_about_a_missing_pv_do_not_hide_lvms_own_not_found():
    assert Lvm(Replay("lvremove_pv_rejected_nosuch"), "slabvol").remove("nosuch") is False
    assert Lvm(Replay("lvremove_pv_rejected"), "slabvol").remove("slab_idle") is True


@pytest.mark.parametrize("warning", [
    # as LVM 2.02 (e.g. RHEL 7) words it, and as LVM 2.03.16 does (capture_boot3.sh)
    "  WARNING: Device for PV YSD4RS-3oEn-NgZv-5rNh-xz3W-orFX-sZinGv not found or rejected "
    "by a filter.\n",
    "  WARNING: Couldn't find device with uuid YSD4RS-3oEn-NgZv-5rNh-xz3W-orFX-sZinGv.\n",
])
def test_a_not_found_warning_is_not_a_missing_lv_or_vg(warning):
    """A failed lvremove must not count as "already gone" because a warning about some
    PV says "not found": the slab would be forgotten while it still exists."""
    stderr = warning + "  Logical volume slabvol/slab_a contains a filesystem in use.\n"
    lvm = Lvm(Replay((5, "", stderr)), "slabvol")
    with pytest.raises(CommandError) as caught:
        lvm.remove("slab_a")
    assert not isinstance(caught.value, (LvNotFound, VgNotFound, NoRoom))
    with pytest.raises(CommandError) as caught:
        Lvm(Replay((5, "", stderr)), "slabvol").change_tags("slab_a", add=["slabvol.a=b"])
    assert not isinstance(caught.value, (LvNotFound, VgNotFound, NoRoom))


def test_not_found_about_another_lv_or_vg_is_not_ours():
    other_lv = '  Failed to find logical volume "slabvol/slab_other"\n'
    with pytest.raises(CommandError) as caught:
        Lvm(Replay((5, "", other_lv)), "slabvol").remove("slab_a")
    assert not isinstance(caught.value, LvNotFound)
    other_vg = '  Volume group "othervg" not found\n  Cannot process volume group othervg\n'
    with pytest.raises(CommandError) as caught:
        Lvm(Replay((5, "", other_vg)), "slabvol").remove("slab_a")
    assert not isinstance(caught.value, VgNotFound)


# -- whole PVs and VGs (install.sh) ------------------------------------------------------

def test_physical_volumes_lists_every_pv_with_its_vg():
    from slabvol.lvm import physical_volumes
    rows = [{"pv_name": "/dev/loop0", "vg_name": "slabvol"}, {"pv_name": "/dev/xvdz",
                                                             "vg_name": ""}]
    runner = Replay((0, report_json("pv", rows), ""))
    assert physical_volumes(runner) == {"/dev/loop0": "slabvol", "/dev/xvdz": ""}
    assert runner.calls == [["pvs", "--reportformat", "json", "-o", "pv_name,vg_name"]]
    with pytest.raises(SlabvolError, match="run `pvs` by hand"):
        physical_volumes(Replay((0, "  Scanning...\n", "")))
    with pytest.raises(CommandError):
        physical_volumes(Replay((5, "", "  Device-mapper failed\n")))


def test_pv_and_vg_commands_build_these_argv():
    from slabvol.lvm import create_pv, remove_pv
    runner = Replay("setup_pvcreate", "setup_vgcreate", OK, OK, OK)
    create_pv(runner, "/dev/loop0", "64m")
    lvm = Lvm(runner, "slabvol")
    lvm.create_vg("/dev/loop0")
    lvm.activate_vg()
    lvm.remove_vg()
    remove_pv(runner, "/dev/loop0")
    assert runner.calls == [["pvcreate", "--metadatasize", "64m", "/dev/loop0"],
                            ["vgcreate", "slabvol", "/dev/loop0"],
                            ["vgchange", "--activate", "y", "slabvol"],
                            ["vgremove", "slabvol"], ["pvremove", "/dev/loop0"]]


def test_a_vg_command_on_a_missing_vg_raises_vg_not_found():
    with pytest.raises(VgNotFound):
        Lvm(Replay("lvremove_nosuchvg"), "nosuchvg").remove_vg()
