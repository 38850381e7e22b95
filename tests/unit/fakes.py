"""An in-memory node for the driver tests: a fake volume group, mkfs, mount and umount.

``FakeNode`` stands in for ``process.Runner``: the same ``call(argv)`` / ``run(argv)``
signatures, the same ``process.Result``, and ``run`` raises ``CommandError`` on a non-zero
exit like the real one. It understands exactly the argv forms ``lvm.py`` and ``driver.py``
build and fails the test on anything else. Its output, exit codes and error texts copy
real LVM 2.03.16 / util-linux 2.38 output as captured in tests/fixtures/lvm/ (see the
README there); in particular ``vgs`` with LV fields returns no row at all for a VG without
LVs where ``lvm fullreport`` (the report lvm.py runs) has the VG's row, and tags come back
sorted.

It keeps a kernel mount table in sync with mount/umount (``read_mounts``) and serves
filesystem usage per mount dir (``usage``).
"""

import json
import os
import re
from dataclasses import dataclass, field
from typing import List, Optional

from slabvol import slab as S
from slabvol.lvm import LV_FIELDS, PVS_ARGV, REPORT_FLAGS, VG_FIELDS, report_argv
from slabvol.mounts import Mount, MountTable
from slabvol.process import Result, Runner

MIB = 1024 * 1024
KUBELET = "/var/lib/kubelet"
CLOCK = 1_700_000_000
DM_MAJOR = 254
LVM_TAG = re.compile(r"[A-Za-z0-9_+.\-/=!:#&]+")
MKFS = {
    "ext4": ["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1"],
    "xfs": ["mkfs.xfs", "-q", "-f", "-n", "ftype=1"],
}


def pod_uid(label="uid-1"):
    """A pod UID as the API server makes them (a UUID), the same for the same label."""
    import uuid  # (not at the top: test_lean_start checks that the driver never imports it)
    return str(uuid.uuid5(uuid.NAMESPACE_URL, label))


def pod_dir(uid="uid-1", name="docker"):
    """The kubelet's volume dir for this driver of the pod labelled ``uid``."""
    return f"{KUBELET}/pods/{pod_uid(uid)}/volumes/ax~vol_plugin/{name}"


def make_driver(node, config):
    """A Driver whose runner, mount table and usage are the fake node's; new slabs are
    named slab_1, slab_2, ... and the clock stands still at CLOCK."""
    from slabvol.driver import Driver
    names = iter(f"slab_{i}" for i in range(1, 1000))
    return Driver(config, runner=node, read_mounts=node.read_mounts, usage=node.usage,
                  clock=lambda: CLOCK, new_name=lambda: next(names))


def slab(name, state=S.FREE, size_mb=1024, fs="ext4", ns="team-a", last_used=100, key="",
         type=S.GRAPH, mount_dir="", size_bytes=None):
    """A Slab record for the pure policy and label tests (no node behind it)."""
    return S.Slab(lv_name=name, lv_path=f"/dev/slabvol/{name}",
                  size_bytes=size_mb * MIB if size_bytes is None else size_bytes,
                  state=state, size_mb=size_mb, fs_type=fs, type=type, namespace=ns,
                  last_used=last_used, cache_key=key, mount_dir=mount_dir)


def volume_group(size_mb=10240, free_mb=10240, extent_size=4 * MIB):
    """A VolumeGroup record (sizes in MiB here, bytes inside)."""
    from slabvol.lvm import VolumeGroup
    return VolumeGroup("slabvol", size_mb * MIB, free_mb * MIB, extent_size)


def free_slab(node, name, size_mb=1024, ns="team-a", fs="ext4", last_used=100, key="",
              active=True):
    """A slab an earlier pod left in the pool."""
    return node.add_lv(name, size_mb, S.new_tags(
        state=S.FREE, size_mb=size_mb, fs_type=fs, type=S.GRAPH, namespace=ns, cache_key=key,
        last_used=last_used, use_count=1), active=active, fs=fs)


def claimed_slab(node, name, mount_dir, size_mb=1024, type=S.GRAPH, active=True,
                 state=S.IN_USE):
    """A slab claimed for ``mount_dir`` by an earlier process, not mounted (yet)."""
    return node.add_lv(name, size_mb, S.new_tags(
        state=state, size_mb=size_mb, fs_type="ext4", type=type, namespace="team-a",
        pod_uid="uid-x", mount_dir=mount_dir, cache_key="repo-x", last_used=100, use_count=4),
        active=active)


def report_json(section, rows):
    """A report laid out exactly as ``--reportformat json`` prints it."""
    lines = ["  {", '      "report": [', "          {", f'              "{section}": [']
    body = [" " * 18 + json.dumps(row, separators=(", ", ":"), ensure_ascii=False)
            for row in rows]
    if body:
        lines.append(",\n".join(body))
    lines += ["              ]", "          }", "      ]", "  }"]
    return "\n".join(lines) + "\n"


def _is_report(argv):
    return argv[0] == "vgs" or argv[:2] == ["lvm", "fullreport"]


def full_report_json(sections):
    """An ``lvm fullreport`` laid out exactly as ``--reportformat json`` prints it: one
    element for the VG, a section per object type (``sections``: (name, rows) pairs); no
    element at all for a missing VG (``sections`` None)."""
    if sections is None:
        return '  {\n      "report": [\n      ]\n  }\n'
    pad = " " * 14
    parts = []
    for name, rows in sections:
        lines = [f'{pad}"{name}": [']
        if rows:
            lines.append(",\n".join(" " * 18 + json.dumps(row, separators=(", ", ":"),
                                                           ensure_ascii=False) for row in rows))
        lines.append(f"{pad}]")
        parts.append("\n".join(lines))
    body = [f"\n{pad},\n".join(parts)] if parts else []
    lines = ["  {", '      "report": [', "          {", *body, "          }", "      ]", "  }"]
    return "\n".join(lines) + "\n"


@dataclass
class FakeLv:
    name: str
    size: int
    tags: List[str]
    minor: int
    active: bool = True
    fs: Optional[str] = None  # set by mkfs
    held: bool = False  # open outside this mount namespace (a leaked copy of a mount)


class Crash(BaseException):
    """A simulated ``kill -9``: no ``except`` clause of slabvol catches it."""


@dataclass
class FakeNode(Runner):
    """``run`` is the real Runner's (raise on failure); only ``call`` is faked."""

    vg_name: str = "slabvol"
    vg_size: int = 10240 * MIB
    extent_size: int = 4 * MIB
    lvs: dict = field(default_factory=dict)
    mounts: List[Mount] = field(default_factory=list)
    calls: List[list] = field(default_factory=list)
    configs: List[tuple] = field(default_factory=list)  # (program, --config value)
    failures: dict = field(default_factory=dict)  # program -> (rc, stderr), one-shot
    busy_dirs: set = field(default_factory=set)  # umount says "target is busy"
    used: dict = field(default_factory=dict)  # mount dir -> used percent (None: unreadable)
    missing_vg: bool = False
    unactivatable: set = field(default_factory=set)  # LV names whose activation fails
    crash_after: Optional[int] = None  # raise Crash once the N-th command has taken effect
    # The VG's PVs as (uuid, device name now); rename_pvs() renames them (issue 10).
    pvs: list = field(default_factory=lambda: [("SCJc8W-xu4R-LhBT-cu8q-9OyN-WBmJ-dZm9gQ",
                                                "/dev/loop0")])
    lvm_version: str = "2.03.16(2) (2022-05-18)"
    use_devicesfile: int = 0  # Debian's build; lvmscan also looks for the file itself
    no_lvm_conf: bool = False  # `lvmconfig --typeconfig full` fails without one
    # PVs outside this VG (install.sh's disks): device -> the VG they belong to, "" for none.
    other_pvs: dict = field(default_factory=dict)

    # -- the Runner interface ------------------------------------------------------------

    def call(self, argv):
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        program = argv[0]
        full = argv
        argv, scope = self._scope(argv)
        if program in ("lvcreate", "lvchange", "lvremove") and argv[1:2] == ["--config"]:
            self.configs.append((program, argv[2]))  # lvm.py's metadata-history settings
            argv = [program, *argv[3:]]
        if program in self.failures:
            rc, stderr = self.failures.pop(program)
            return Result(tuple(full), rc, "", stderr)
        handler = self._handler(argv)
        if handler is None:
            raise AssertionError(f"the fake node does not know {argv}")
        rc, stdout, stderr = self._narrowed(handler, argv, scope)
        if self.crash_after is not None and len(self.calls) >= self.crash_after:
            self.crash_after = None
            raise Crash(f"killed right after {argv}")
        return Result(tuple(full), rc, stdout, stderr)

    def _handler(self, argv):
        """The method that answers ``argv`` (a subclass adds programs), or None."""
        return {"vgs": self._vgs, "lvcreate": self._lvcreate, "lvchange": self._lvchange,
                "lvremove": self._lvremove, "mkfs.ext4": self._mkfs, "mkfs.xfs": self._mkfs,
                "mount": self._mount, "umount": self._umount, "lvm": self._lvm,
                "lvmconfig": self._lvmconfig, "pvs": self._pvs, "pvcreate": self._pvcreate,
                "vgcreate": self._vgcreate, "vgchange": self._vgchange,
                "vgremove": self._vgremove, "pvremove": self._pvremove}.get(argv[0])

    # -- the device scope (--devices, a devices/filter in --config; issue 10) ------------

    def _scope(self, argv):
        """(argv without the scope's options, the device names it allows or None)."""
        scope, rest = None, [argv[0]]
        i = 1
        while i < len(argv):
            if argv[i] == "--devices":
                scope = (scope or []) + [argv[i + 1]]
                i += 2
                continue
            if argv[i] == "--config" and "devices { filter" in argv[i + 1]:
                text = argv[i + 1]
                start = text.index("devices { filter")
                snippet = text[start:text.index("] }", start) + 3]
                accepted = re.findall(r'"a\|\^(.*?)\$\|"', snippet)
                scope = (scope or []) + [re.sub(r"\[(.)\]", r"\1", a) for a in accepted]
                remaining = (text[:start] + text[start + len(snippet):]).strip()
                rest += ["--config", remaining] if remaining else []
                i += 2
                continue
            rest.append(argv[i])
            i += 1
        return rest, scope

    def _narrowed(self, handler, argv, scope):
        """As captured in boot 4: a scope without any PV of the VG hides the VG (rc 5,
        `Volume group not found`); one with some of them warns of the others."""
        report = argv[0] == "vgs" or argv[:2] == ["lvm", "fullreport"]
        if scope is None or not (report or argv[0] in ("lvcreate", "lvchange", "lvremove")):
            return handler(argv)
        missing = [(uuid, name) for uuid, name in self.pvs if name not in scope]
        if len(missing) == len(self.pvs) and not report:
            return self._no_vg()  # captured: lv{change,create,remove}_devices_other_only
        if len(missing) == len(self.pvs):
            saved, self.missing_vg = self.missing_vg, True
            try:
                return handler(argv)
            finally:
                self.missing_vg = saved
        rc, stdout, stderr = handler(argv)
        warnings = "".join(f"  WARNING: Couldn't find device with uuid {uuid}.\n"
                           f"  WARNING: VG {self.vg_name} is missing PV {uuid} (last written to "
                           f"{name}).\n" for uuid, name in missing)
        return rc, stdout, warnings + stderr

    def rename_pvs(self, *names):
        """The PVs come back under other names (a reboot, a loop device re-attached)."""
        self.pvs = [(uuid, name) for (uuid, _), name in zip(self.pvs, names)]

    def _lvm(self, argv):
        if argv[1:2] == ["fullreport"]:
            return self._fullreport(argv)
        assert argv == ["lvm", "version"], argv
        return 0, (f"  LVM version:     {self.lvm_version}\n"
                   f"  Library version: 1.02.185 (2022-05-18)\n"
                   f"  Driver version:  4.47.0\n"), ""

    def _lvmconfig(self, argv):
        assert argv[:2] == ["lvmconfig", "--typeconfig"] and argv[3:] == ["devices"], argv
        if argv[2] == "default":
            return 0, ('devices {\n\t# use_devicesfile=0\n\t# devicesfile="system.devices"'
                       '\n}\n'), ""
        assert argv[2] == "full", argv
        if self.no_lvm_conf:
            return 5, "", ("  Cannot clone NULL config node.\n"
                           "  Failed to clone current config tree.\n")
        return 0, (f"devices {{\n\tuse_devicesfile={self.use_devicesfile}\n"
                   f'\tdevicesfile="system.devices"\n}}\n'), ""

    # -- seams for the driver ------------------------------------------------------------

    def read_mounts(self):
        return MountTable(list(self.mounts))

    def usage(self, path):
        return self.used.get(path, 10.0)

    # -- test helpers --------------------------------------------------------------------

    @property
    def free(self):
        return self.vg_size - sum(lv.size for lv in self.lvs.values())

    def add_lv(self, name, size_mb, tags=(), active=True, fs="ext4"):
        """An LV that already exists on the node (made by an earlier process)."""
        self.lvs[name] = FakeLv(name, size_mb * MIB, sorted(set(tags)), self._next_minor(),
                                active, fs)
        return self.lvs[name]

    def mount_by_hand(self, device, mountpoint, fs_type="ext4", source="/dev/sda1"):
        self.mounts.append(Mount(device, mountpoint, fs_type, source))

    def device(self, name):
        return (DM_MAJOR, self.lvs[name].minor)

    def is_open(self, lv):
        return lv.active and (lv.held or bool(self.read_mounts().of_device(self.device(lv.name))))

    def mounted_at(self, path):
        return self.read_mounts().at(path)

    def programs(self):
        return [argv[0] for argv in self.calls]

    def reports(self):
        """The argv of every read-only LVM report."""
        return [argv for argv in self.calls if _is_report(argv)]

    def changes(self):
        """The argv of every command except the read-only reports."""
        return [argv for argv in self.calls if not _is_report(argv)]

    def slab_tags(self, name):
        return {t.split("=", 1)[0][len("slabvol."):]: t.split("=", 1)[1]
                for t in self.lvs[name].tags if t.startswith("slabvol.")}

    def state(self, name):
        return self.slab_tags(name).get("state")

    def check_invariants(self):
        """No device mounted twice, no slab mid-creation, every mount a known LV."""
        devices = [m.device for m in self.mounts if m.device[0] == DM_MAJOR]
        assert len(devices) == len(set(devices)), f"a slab is mounted twice: {self.mounts}"
        for lv in self.lvs.values():
            assert "slabvol.state=creating" not in lv.tags, f"{lv.name} left creating"
            if "slabvol.state=in-use" in lv.tags:
                assert lv.fs is not None, f"{lv.name} in use without a filesystem"

    # -- commands ------------------------------------------------------------------------

    def _next_minor(self):
        used = {lv.minor for lv in self.lvs.values()}
        return next(m for m in range(1000) if m not in used)  # dm reuses minors

    def _no_vg(self, name=None):
        name = name or self.vg_name
        return 5, "", f'  Volume group "{name}" not found\n  Cannot process volume group {name}\n'

    def _lv_arg(self, text):
        vg, _, name = text.partition("/")
        assert vg == self.vg_name and name, text
        return name

    def _no_lv(self, name):
        return 5, "", f'  Failed to find logical volume "{self.vg_name}/{name}"\n'

    def _vgs(self, argv):
        if argv[1:5] == ["--reportformat", "json", "-o", "pv_name"]:  # lvmscan learning
            assert argv[5:] == [self.vg_name], argv
            if self.missing_vg:
                rc, _, stderr = self._no_vg()
                return rc, report_json("vg", []), stderr
            return 0, report_json("vg", [{"pv_name": name} for _, name in self.pvs]), ""
        assert argv[:6] == ["vgs", *REPORT_FLAGS] and argv[6] == "-o" and len(argv) == 9, argv
        assert argv[8] == self.vg_name, argv
        fields = argv[7].split(",")
        assert fields in (list(VG_FIELDS + LV_FIELDS), list(VG_FIELDS)), fields
        if self.missing_vg:
            rc, _, stderr = self._no_vg()
            return rc, report_json("vg", []), stderr
        vg = {"vg_name": self.vg_name, "vg_size": str(self.vg_size),
              "vg_free": str(self.free), "vg_extent_size": str(self.extent_size)}
        if fields == list(VG_FIELDS):
            return 0, report_json("vg", [vg]), ""
        rows = []
        for lv in self.lvs.values():
            values = dict(vg, lv_name=lv.name, lv_path=f"/dev/{self.vg_name}/{lv.name}",
                          lv_size=str(lv.size), lv_tags=",".join(sorted(lv.tags)),
                          lv_active="active" if lv.active else "",
                          lv_kernel_major=str(DM_MAJOR) if lv.active else "-1",
                          lv_kernel_minor=str(lv.minor) if lv.active else "-1",
                          lv_device_open="open" if self.is_open(lv) else "")
            rows.append({f: values[f] for f in fields})
        return 0, report_json("vg", rows), ""  # no row at all for a VG without LVs

    def _fullreport(self, argv):
        """``lvm fullreport`` as lvm.report_argv builds it: the VG's row even without LVs
        (captured: fullreport_empty, fullreport_three, fullreport_nosuchvg)."""
        assert argv == report_argv(argv[-1]), argv
        if self.missing_vg or argv[-1] != self.vg_name:
            rc, _, stderr = self._no_vg(argv[-1])
            return rc, full_report_json(None), stderr
        vg = {"vg_name": self.vg_name, "vg_size": str(self.vg_size),
              "vg_free": str(self.free), "vg_extent_size": str(self.extent_size)}
        lvs = [{"lv_name": lv.name, "lv_path": f"/dev/{self.vg_name}/{lv.name}",
                "lv_size": str(lv.size), "lv_tags": ",".join(sorted(lv.tags)),
                "lv_active": "active" if lv.active else "",
                "lv_kernel_major": str(DM_MAJOR) if lv.active else "-1",
                "lv_kernel_minor": str(lv.minor) if lv.active else "-1",
                "lv_device_open": ("open" if self.is_open(lv) else "") if lv.active
                else "unknown"}
               for lv in sorted(self.lvs.values(), key=lambda lv: lv.name)]  # sorted by name
        starts, start = [], 0  # PV segments: each LV's extents in creation order, then free
        for lv in self.lvs.values():
            starts.append(start)
            start += lv.size // self.extent_size
        starts += [start] if self.free else []
        return 0, full_report_json([
            ("vg", [vg]), ("pv", [{"pv_name": name} for _, name in self.pvs]), ("lv", lvs),
            ("pvseg", [{"pvseg_start": str(s)} for s in starts]),
            ("seg", [{"seg_start": "0"} for _ in lvs])]), ""

    def _tags(self, argv, i, flag):
        tags = []
        while i < len(argv) and argv[i] == flag:
            tag = argv[i + 1]
            if not LVM_TAG.fullmatch(tag):
                return None, i, (3, "", f"  Invalid argument for {flag}: {tag}\n"
                                        f"  Error during parsing of command line.\n")
            tags.append(tag)
            i += 2
        return tags, i, None

    def _lvcreate(self, argv):
        assert argv[:6] == ["lvcreate", "--yes", "--wipesignatures", "y", "--zero", "y"], argv
        assert argv[6] == "--name" and argv[8] == "--size" and argv[9].endswith("b"), argv
        name, size = argv[7], int(argv[9][:-1])
        tags, i, error = self._tags(argv, 10, "--addtag")
        if error:
            return error
        assert argv[i:] == [self.vg_name], argv
        if self.missing_vg:
            return self._no_vg()
        if name in self.lvs:
            return 5, "", (f'  Logical Volume "{name}" already exists in volume group '
                           f'"{self.vg_name}"\n')
        extents = -(-size // self.extent_size)
        if extents * self.extent_size > self.free:
            return 5, "", (f'  Volume group "{self.vg_name}" has insufficient free space '
                           f"({self.free // self.extent_size} extents): {extents} required.\n")
        self.lvs[name] = FakeLv(name, extents * self.extent_size, sorted(set(tags)),
                                self._next_minor())
        return 0, f'  Logical volume "{name}" created.\n', ""

    def _lvchange(self, argv):
        if argv[1] == "--activate":
            assert argv[2] == "y" and len(argv) == 4, argv
            name = self._lv_arg(argv[3])
            if name not in self.lvs:
                return self._no_lv(name)
            if name in self.unactivatable:  # a fault injected by a test
                return 5, "", (f"  device-mapper: reload ioctl on  ({DM_MAJOR}:"
                               f"{self.lvs[name].minor}) failed: Invalid argument\n")
            self.lvs[name].active = True
            return 0, "", ""
        delete, i, error = self._tags(argv, 1, "--deltag")
        if error:
            return error
        add, i, error = self._tags(argv, i, "--addtag")
        if error:
            return error
        assert delete or add, argv
        assert i == len(argv) - 1, argv
        name = self._lv_arg(argv[i])
        if name not in self.lvs:
            return self._no_lv(name)
        lv = self.lvs[name]
        lv.tags = sorted((set(lv.tags) - set(delete)) | set(add))
        return 0, f"  Logical volume {self.vg_name}/{name} changed.\n", ""

    def _lvremove(self, argv):
        assert argv[1] == "--yes" and len(argv) == 3, argv
        name = self._lv_arg(argv[2])
        if name not in self.lvs:
            return self._no_lv(name)
        if self.is_open(self.lvs[name]):  # as captured: lvremove_mounted, _held_elsewhere
            return 5, "", f"  Logical volume {self.vg_name}/{name} contains a filesystem in use.\n"
        del self.lvs[name]
        return 0, f'  Logical volume "{name}" successfully removed.\n', ""

    def _lv_of_path(self, path):
        prefix = f"/dev/{self.vg_name}/"
        name = path[len(prefix):] if path.startswith(prefix) else None
        lv = self.lvs.get(name)
        return lv if lv is not None and lv.active else None

    def _mkfs(self, argv):
        fs = argv[0].split(".", 1)[1]
        assert argv[:-1] == MKFS[fs], argv
        lv = self._lv_of_path(argv[-1])
        if lv is None:
            return 1, "", (f"Error accessing specified device {argv[-1]}: "
                           f"No such file or directory\n")
        lv.fs = fs
        return 0, "", ""

    def _mount(self, argv):
        assert argv[1] == "-t", argv
        fs, rest = argv[2], argv[3:]
        if rest[:2] == ["-o", "ro"]:
            rest = rest[2:]
        assert len(rest) == 2, argv
        device, target = rest
        lv = self._lv_of_path(device)
        if lv is None:
            return 32, "", (f"mount: {target}: special device {device} does not exist.\n"
                            f"       dmesg(1) may have more information after failed mount "
                            f"system call.\n")
        if not os.path.isdir(target):
            return 32, "", f"mount: {target}: mount point does not exist.\n"
        if lv.fs != fs:
            return 32, "", (f"mount: {target}: wrong fs type, bad option, bad superblock on "
                            f"{device}, missing codepage or helper program, or other error.\n")
        source = f"/dev/mapper/{self.vg_name}-{lv.name}"
        target = os.path.realpath(target)  # the kernel records the resolved path (captured:
        # mountinfo_through_symlink)
        if any(m.device == (DM_MAJOR, lv.minor) and m.mountpoint == target
               for m in self.mounts):
            return 32, "", f"mount: {target}: {source} already mounted on {target}.\n"
        self.mounts.append(Mount((DM_MAJOR, lv.minor), target, fs, source))
        return 0, "", ""

    def _umount(self, argv):
        assert len(argv) == 2, argv
        target = argv[1]
        if target in self.busy_dirs:
            return 32, "", f"umount: {target}: target is busy.\n"
        mount = self.read_mounts().at(os.path.realpath(target))
        if mount is None:
            return 32, "", f"umount: {target}: not mounted.\n"
        self.mounts.remove(mount)
        return 0, "", ""

    # -- whole PVs and VGs (install.sh). Output as captured where there is a capture
    # (setup_pvcreate, setup_vgcreate); pvs, vgchange, vgremove and pvremove were not
    # captured: their success lines are LVM 2.03's (tools/pvremove.c, vgremove.c, ...).

    def pv_owners(self):
        """{device: VG name or ""} of every PV, as ``pvs`` lists them."""
        mine = {} if self.missing_vg else {name: self.vg_name for _, name in self.pvs}
        return {**mine, **self.other_pvs}

    def make_vg(self, device, name=None):
        """The VG (now named ``name``) exists on ``device``, without LVs unless it had some."""
        self.other_pvs.pop(device, None)
        self.vg_name, self.missing_vg = name or self.vg_name, False
        self.pvs = [(f"uuid-of-{device}", device)]

    def _pvs(self, argv):
        assert argv == list(PVS_ARGV), argv
        rows = [{"pv_name": pv, "vg_name": vg} for pv, vg in sorted(self.pv_owners().items())]
        return 0, report_json("pv", rows), ""

    def _pvcreate(self, argv):
        assert argv[:2] == ["pvcreate", "--metadatasize"] and len(argv) == 4, argv
        assert argv[3] not in self.pv_owners(), argv
        self.other_pvs[argv[3]] = ""
        return 0, f'  Physical volume "{argv[3]}" successfully created.\n', ""

    def _vgcreate(self, argv):
        _, name, device = argv
        assert self.other_pvs.get(device) == "", argv
        if self.missing_vg:  # this fake's one VG with LVs
            self.make_vg(device, name)
        else:
            self.other_pvs[device] = name
        return 0, f'  Volume group "{name}" successfully created\n', ""

    def _vgchange(self, argv):
        assert argv[:3] == ["vgchange", "--activate", "y"] and len(argv) == 4, argv
        if self.missing_vg or argv[3] != self.vg_name:
            return self._no_vg(argv[3])
        for lv in self.lvs.values():
            lv.active = True
        return 0, (f'  {len(self.lvs)} logical volume(s) in volume group "{self.vg_name}" '
                   f"now active\n"), ""

    def _vgremove(self, argv):
        _, name = argv
        if self.missing_vg or name != self.vg_name:
            return self._no_vg(name)
        assert not self.lvs, "vgremove without --force asks before removing LVs"
        self.other_pvs.update({device: "" for _, device in self.pvs})
        self.missing_vg, self.pvs = True, []
        return 0, f'  Volume group "{name}" successfully removed\n', ""

    def _pvremove(self, argv):
        _, device = argv
        assert self.other_pvs.get(device) == "", argv  # a PV of no VG
        del self.other_pvs[device]
        return 0, f'  Labels on physical volume "{device}" successfully wiped.\n', ""
