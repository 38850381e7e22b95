"""LVM adapter: builds argv lists, runs them through the runner, parses JSON reports.

No slab policy lives here. Sizes are bytes. One field list drives both ``-o`` and the
parser. Failures are classified into typed errors so callers can treat "not found"
as a normal, idempotent case.
"""

import json
from collections import namedtuple

from .errors import CommandError, NoRoom, SlabvolError

REPORT_FLAGS = ("--reportformat", "json", "--units", "b", "--nosuffix")
VG_FIELDS = ("vg_name", "vg_size", "vg_free", "vg_extent_size")
# lv_device_open: the kernel's open count of the LV's device is not zero. It covers every
# mount namespace (a copy of a mount that outlived its pod elsewhere holds the device open),
# where the mount table covers only this process's own.
LV_FIELDS = ("lv_name", "lv_path", "lv_size", "lv_tags", "lv_active",
             "lv_kernel_major", "lv_kernel_minor", "lv_device_open")
# One LVM report per call (issue 10). `lvm fullreport` reports a VG as sections, and its
# "vg" section has the VG's row even when the VG has no LVs, where `vgs` with LV fields has
# no row at all then and a second, VG-only `vgs` was needed (tests/fixtures/lvm/README.md,
# boots 1 and 5). Every section gets its own field list (--configreport, as lvm2's lvmdbusd
# calls it); the three slabvol does not read get one short field each (-o must not be
# empty). The command is argv[1]: LVM takes options only after it.
FULL_REPORT = ("lvm", "fullreport")
UNUSED_SECTIONS = ("--configreport", "pv", "-o", "pv_name",
                   "--configreport", "pvseg", "-o", "pvseg_start",
                   "--configreport", "seg", "-o", "seg_start")


def report_argv(vg_name):
    return [*FULL_REPORT, *REPORT_FLAGS, "--configreport", "vg", "-o", ",".join(VG_FIELDS),
            "--configreport", "lv", "-o", ",".join(LV_FIELDS), *UNUSED_SECTIONS, vg_name]


# Metadata history. Before every metadata change LVM archives the whole VG's metadata as a
# file in /etc/lvm/archive and keeps each for 30 days (lvm.conf backup/retain_days): with
# hundreds of CI pods a day, tens of thousands of files, each larger with every slab.
# - A tag change (claim, release, retire) is routine: it is archived nowhere.
# - Creating or removing a slab archives once, and LVM then prunes this VG's archive to the
#   newest ARCHIVES_KEPT files (retain_days = 0: no minimum age; LVM's archive_vg prunes
#   per VG, so other VGs' history is untouched).
# backup/backup stays on, so /etc/lvm/backup/<vg> always holds the current metadata (and
# every PV's metadata area holds it too): `vgcfgrestore` works from either.
ARCHIVES_KEPT = 20
ROUTINE = ("--config", "backup { archive = 0 }")
STRUCTURAL = ("--config", f"backup {{ retain_min = {ARCHIVES_KEPT} retain_days = 0 }}")


class VgNotFound(SlabvolError):
    """The configured volume group does not exist on this node."""


class LvNotFound(SlabvolError):
    """The logical volume does not exist."""


# Records are namedtuples, here and in the rest of the driver: a dataclass costs every
# kubelet call more to define than this module costs to import (tests/unit/test_lean_start).
# Sizes in bytes; major and minor are None when the LV is not active.
VolumeGroup = namedtuple("VolumeGroup", "name size free extent_size")
LogicalVolume = namedtuple("LogicalVolume", "name path size tags active major minor open",
                           defaults=(False,))


def _int(text, default=None):
    try:
        value = int(str(text).strip())
    except ValueError:
        return default
    return value


def parse_report(text, vg_name):
    """Parse an LVM JSON report for ``vg_name``. Returns (VolumeGroup, [LogicalVolume]).

    ``lvm fullreport`` (what ``Lvm.report`` runs) has an element per VG with a section per
    object type: "vg" holds the VG's one row (also for a VG without LVs), "lv" a row per LV.
    A ``vgs``/``lvs`` report (the captures of boots 1-3) has one section whose rows carry
    both: a row per LV with the VG columns repeated, and no row for a VG without LVs."""
    try:
        rows, lv_rows = [], []
        for element in json.loads(text)["report"]:
            if "lv" in element and "vg" in element:  # fullreport
                vg_rows = [row for row in element["vg"] if row.get("vg_name") == vg_name]
                rows += vg_rows
                lv_rows += element["lv"] if vg_rows else []
                continue
            mine = [row for section in element.values() for row in section
                    if row.get("vg_name") == vg_name]
            rows += mine
            lv_rows += mine
        lv_rows = [row for row in lv_rows if row.get("lv_name")]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SlabvolError(f"could not parse the LVM report for volume group {vg_name!r} "
                           f"({exc}); run `vgs {vg_name}` by hand to see what LVM says") from None
    if not rows:
        raise VgNotFound(_vg_missing(vg_name))
    first = rows[0]
    try:
        vg = VolumeGroup(vg_name, int(first["vg_size"]), int(first["vg_free"]),
                         int(first["vg_extent_size"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise SlabvolError(f"the LVM report for {vg_name!r} lacks a usable {exc}") from None
    lvs = []
    for row in lv_rows:
        major = _int(row.get("lv_kernel_major"), -1)
        minor = _int(row.get("lv_kernel_minor"), -1)
        tags = tuple(t for t in row.get("lv_tags", "").split(",") if t)
        lvs.append(LogicalVolume(
            name=row["lv_name"], path=row.get("lv_path") or f"/dev/{vg_name}/{row['lv_name']}",
            size=_int(row.get("lv_size"), 0), tags=tags,
            active=row.get("lv_active", "") == "active",
            major=None if major < 0 else major, minor=None if minor < 0 else minor,
            open=row.get("lv_device_open", "") == "open"))
    return vg, lvs


def _vg_missing(vg_name):
    return (f"volume group {vg_name!r} not found on this node; create it with "
            f"`install.sh --disk /dev/DISK` (or `--loopback`), or set volume_group in the "
            f"slabvol config")


def _classify(error, vg_name, lv_name=None):
    """A typed error for LVM's own "not found" and "no room" messages about *this* VG or LV.

    Only LVM's error lines count, matched with the names in them: a warning such as
    "Device for PV ... not found or rejected by a filter" is not a missing LV.
    """
    lines = [line.strip() for line in error.stderr.splitlines()]
    if f'Volume group "{vg_name}" not found' in lines:
        return VgNotFound(_vg_missing(vg_name))
    if lv_name and f'Failed to find logical volume "{vg_name}/{lv_name}"' in lines:
        return LvNotFound(f"logical volume {vg_name}/{lv_name} does not exist")
    if any(line.startswith(f'Volume group "{vg_name}" has insufficient free space')
           for line in lines):
        return NoRoom(f"volume group {vg_name!r} has no room: {error.stderr.strip()}")
    return error


def _lost(outcome, program, vg_name):
    """Did a narrowed command miss the VG's devices? LVM's own words (lib/metadata/
    metadata.c, 2.03.11 and 2.03.16 alike; captured in boot 4)."""
    if isinstance(outcome, VgNotFound):
        return True
    if isinstance(outcome, Exception) or program not in ("vgs", "lvs", "pvs", "fullreport"):
        return False
    return any(line.strip().startswith(f"WARNING: VG {vg_name} is missing PV ")
               for line in outcome.stderr.splitlines())


class Lvm:
    """The commands slabvol needs, for one volume group."""

    def __init__(self, runner, vg_name, scan=None):
        self.runner = runner
        self.vg = vg_name
        self.scan = scan  # lvmscan.DeviceScan: which devices every command looks at

    def _run(self, argv, lv_name=None):
        """Run one LVM command, narrowed to the VG's devices when there is a scan (issue 10:
        the one place where the scope is added). A narrowed command that loses the VG, or
        a narrowed report that finds one of its PVs missing, means the devices were renamed
        or replaced: learn them again with a full scan and run the command once more."""
        scope = self._scope(self.scan.scope) if self.scan is not None else None
        outcome = self._attempt(scope.apply(argv) if scope else argv, lv_name)
        command = argv[1] if argv[0] == "lvm" else argv[0]
        if scope is not None and scope.narrow and _lost(outcome, command, self.vg):
            fresh = self._scope(self.scan.learn)
            if fresh != scope:
                outcome = self._attempt(fresh.apply(argv), lv_name)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _attempt(self, argv, lv_name):
        try:
            return self.runner.run(argv)
        except CommandError as exc:
            return _classify(exc, self.vg, lv_name)

    def _scope(self, get):
        try:
            return get()  # learning runs a full-scan `vgs`: a missing VG fails there
        except CommandError as exc:
            raise _classify(exc, self.vg) from None

    def report(self):
        """(VolumeGroup, [LogicalVolume]) from one ``lvm fullreport``, with or without LVs
        (a missing VG fails it with exit code 5)."""
        return parse_report(self._run(report_argv(self.vg)).stdout, self.vg)

    def create(self, lv_name, size_bytes, tags):
        argv = ["lvcreate", *STRUCTURAL, "--yes", "--wipesignatures", "y", "--zero", "y",
                "--name", lv_name, "--size", f"{size_bytes}b"]
        for tag in tags:
            argv += ["--addtag", tag]
        argv.append(self.vg)
        self._run(argv)

    def change_tags(self, lv_name, delete=(), add=()):
        argv = ["lvchange", *ROUTINE]
        for tag in delete:
            argv += ["--deltag", tag]
        for tag in add:
            argv += ["--addtag", tag]
        if len(argv) == 1 + len(ROUTINE):
            return
        argv.append(f"{self.vg}/{lv_name}")
        self._run(argv, lv_name)

    def activate(self, lv_name):
        self._run(["lvchange", "--activate", "y", f"{self.vg}/{lv_name}"], lv_name)

    def remove(self, lv_name):
        """Remove an LV; one that is already gone counts as removed."""
        try:
            self._run(["lvremove", *STRUCTURAL, "--yes", f"{self.vg}/{lv_name}"], lv_name)
        except LvNotFound:
            return False
        return True

    # The whole VG: what install.sh does with --disk, --loopback and --purge.
    def create_vg(self, device):
        self._run(["vgcreate", self.vg, device])

    def activate_vg(self):
        self._run(["vgchange", "--activate", "y", self.vg])

    def remove_vg(self):
        """vgremove of a VG without LVs (LVM would ask before removing LVs)."""
        self._run(["vgremove", self.vg])


PVS_ARGV = ("pvs", "--reportformat", "json", "-o", "pv_name,vg_name")


def report_rows(text):
    """Every row of every section of a ``--reportformat json`` report (``vgs``, ``pvs``)."""
    return [row for element in json.loads(text)["report"] for rows in element.values()
            for row in rows]


def physical_volumes(runner):
    """{device: VG name ("" for a PV of no VG)} of every PV LVM sees."""
    try:
        return {row["pv_name"]: row["vg_name"]
                for row in report_rows(runner.run(list(PVS_ARGV)).stdout)}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SlabvolError(f"could not parse LVM's list of physical volumes ({exc}); run "
                           f"`pvs` by hand to see what LVM says") from None


def create_pv(runner, device, metadata_size):
    runner.run(["pvcreate", "--metadatasize", metadata_size, device])


def remove_pv(runner, device):
    runner.run(["pvremove", device])
