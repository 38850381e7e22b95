"""install.sh and its logic (slabvol.install) against a fake root and a fake node.

Every test gets a temp dir as the node's ``/`` (``--root``) and an ``InstallNode`` standing
in for ``process.Runner``: the driver tests' FakeNode (LVM as captured on real LVM) plus loop
devices, wipefs/lsblk/blkid answers, systemd and the Python interpreters; it answers the
exact argv forms slabvol.install builds and fails the test on anything else. Kubelet
command lines are injected (or written to the fake root's /proc). Nothing needs root,
LVM or the network; the real-LVM checks are in docs/operations.md ("Testing the
installer for real").
"""

import inspect
import io
import json
import os
import stat
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field

import pytest

from slabvol import __version__, config as config_mod
from slabvol.install import main as install_main
from slabvol.install.config_file import CONFIG_HELP, default_config_text
from slabvol.install.host import Host
from slabvol.install.kubelet import detect_kubelet, resolve_plugin_dir
from slabvol.install.layout import (
    DEFAULT_LOOP_FILE, DEFAULT_PLUGIN_DIR, KNOWN_PLUGIN_DIRS, LOOP_UNIT, SYMLINK, VENV_COMPLETE)
from slabvol.install.options import human_size, parse_size
from slabvol.packages import LVM_TOOLS
from slabvol.install.runtime import IMPORT_CHECK
from slabvol.install.volume_group import PARTITION_TABLES
from slabvol.lvm import STRUCTURAL

from fakes import FakeNode

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
DEFAULT_EXE = f"{DEFAULT_PLUGIN_DIR}/ax~vol_plugin/vol_plugin"
MIB = 1024 * 1024
DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n'
ROCKY = 'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\n'
CHANGING = {"pvcreate", "vgcreate", "vgremove", "pvremove", "lvremove", "vgchange"}


@dataclass
class InstallNode(FakeNode):
    """The driver tests' fake node (LVM as captured on real LVM, tests/unit/fakes.py),
    starting without a volume group, plus what install.sh runs besides LVM: wipefs, lsblk
    and blkid answers, loop devices, systemd and the Python interpreters."""

    root: str = "/"
    missing_vg: bool = True
    pvs: list = field(default_factory=list)
    signatures: dict = field(default_factory=dict)  # device or file -> wipefs signatures
    lsblk: dict = field(default_factory=dict)  # device -> lsblk tree (default: a bare disk)
    loops: dict = field(default_factory=dict)  # /dev/loopN -> backing file
    loop_vgs: dict = field(default_factory=dict)  # backing file -> the VG of its LVM label
    enabled: set = field(default_factory=set)
    active: set = field(default_factory=set)
    wipefs_json: bool = True
    venv_module: bool = True
    python_has_slabvol: set = field(default_factory=set)  # interpreters that import slabvol
    init_answer: tuple = None  # None: a correct init; else (rc, stdout)
    init_checked: list = field(default_factory=list)  # (temp file, final file content then)
    init_flags: list = field(default_factory=list)  # the interpreter's flags of each check
    gc_runs: list = field(default_factory=list)  # the driver executables run with `gc`
    gc_flags: list = field(default_factory=list)  # the interpreter's flags of each gc
    gc_answer: tuple = None  # None: gc succeeds; else (rc, stdout, stderr)

    def _handler(self, argv):
        prog = os.path.basename(argv[0])
        if argv[0] == sys.executable or prog.startswith("python") or argv[-1:] == ["init"]:
            return self.python
        return {"lsblk": self._lsblk, "wipefs": self._wipefs, "blkid": self._blkid,
                "losetup": self._losetup, "udevadm": self._udevadm,
                "systemctl": self._systemctl}.get(prog) or super()._handler(argv)

    def python(self, argv):
        if argv[1:] == ["-m", "ensurepip", "--version"]:
            return (0, "pip 23.0.1\n", "") if self.venv_module else \
                (1, "", "/usr/bin/python3: No module named ensurepip\n")
        if argv[1:3] == ["-m", "venv"]:
            os.makedirs(os.path.join(argv[3], "bin"))
            open(os.path.join(argv[3], "bin", "python"), "w").close()
            return 0, "", ""
        if argv[1:4] == ["-m", "pip", "install"]:
            self.python_has_slabvol.add(argv[0])
            return 0, f"Successfully installed slabvol-{__version__}\n", ""
        if argv[1:] == ["-c", IMPORT_CHECK]:
            if argv[0] in self.python_has_slabvol:
                return 0, __version__ + "\n", ""
            return 1, "", "ModuleNotFoundError: No module named 'slabvol'\n"
        if argv[-1:] == ["gc"]:  # the installed driver, run once to publish the NFD labels
            self.gc_runs.append(argv[-2])
            self.gc_flags.append(argv[1:-2])
            return self.gc_answer or (0, "gc: 0 slab(s) repaired, 0 failed\n", "")
        if argv[-1:] == ["init"]:
            tmp = argv[-2]
            self.init_flags.append(argv[1:-2])
            assert os.path.basename(tmp).startswith(".vol_plugin."), argv  # a dot-file
            assert os.access(tmp, os.X_OK), "the temp file is executable before the check"
            final = os.path.join(os.path.dirname(tmp), "vol_plugin")
            self.init_checked.append((tmp, read(final) if os.path.exists(final) else None))
            if self.init_answer:
                return self.init_answer[0], self.init_answer[1], ""
            return 0, json.dumps({"status": "Success", "capabilities": {}}) + "\n", ""
        pytest.fail(f"unexpected python call {argv}")

    def _pvcreate(self, argv):
        if self.signatures.get(argv[-1]):  # pvcreate asks, and stdin is /dev/null
            return 5, "", f"  WARNING: signature detected on {argv[-1]}. Wipe it? [y/n]: [n]\n"
        return super()._pvcreate(argv)

    def _vgcreate(self, argv):
        if argv[2] in self.loops:
            self.loop_vgs[self.loops[argv[2]]] = argv[1]
        return super()._vgcreate(argv)

    def _lsblk(self, argv):
        assert argv[:-1] == ["lsblk", "--json", "--paths", "-o", "NAME,TYPE,FSTYPE,MOUNTPOINT"]
        dev = argv[-1]
        if not os.path.exists(self.root + dev):
            return 32, "", f"lsblk: {dev}: not a block device\n"
        tree = self.lsblk.get(dev, {"name": dev, "type": "disk", "fstype": None,
                                    "mountpoint": None})
        return 0, json.dumps({"blockdevices": [tree]}), ""

    def _wipefs(self, argv):
        target = argv[-1]
        if argv[1:3] == ["--no-act", "--json"]:
            if not self.wipefs_json:
                return 1, "", "wipefs: unrecognized option '--json'\n"
            return 0, json.dumps({"signatures": self.signatures.get(target, [])}), ""
        assert argv == ["wipefs", "--all", target], argv
        self.signatures.pop(target, None)
        self.other_pvs.pop(target, None)
        self.loop_vgs.pop(self.loops.get(target), None)
        return 0, "", ""

    def _blkid(self, argv):
        assert argv[1:4] == ["--probe", "--output", "export"], argv
        sigs = self.signatures.get(argv[-1], [])
        if not sigs:
            return 2, "", ""
        lines = [f"DEVNAME={argv[-1]}"]
        for sig in sigs:
            key = "PTTYPE" if sig["type"] in PARTITION_TABLES else "TYPE"
            lines.append(f"{key}={sig['type']}")
        return 0, "\n".join(lines) + "\n", ""

    def _losetup(self, argv):
        if argv[1:] == ["--list", "--json", "--output", "NAME,BACK-FILE"]:
            rows = [{"name": n, "back-file": f} for n, f in sorted(self.loops.items())]
            return 0, json.dumps({"loopdevices": rows}) if rows else "", ""
        if argv[1:3] == ["--find", "--show"]:
            name = f"/dev/loop{len(self.loops)}"
            self.loops[name] = argv[3]
            owner = self.loop_vgs.get(argv[3])  # the LVM label becomes visible as a PV
            if owner == self.vg_name and self.missing_vg:
                self.make_vg(name)
            elif owner is not None:
                self.other_pvs[name] = owner
            return 0, name + "\n", ""
        if argv[1] == "--detach":
            assert self.loops.pop(argv[2])
            self.other_pvs.pop(argv[2], None)
            if argv[2] in [device for _, device in self.pvs]:
                self.reboot()
            return 0, "", ""
        pytest.fail(f"unexpected losetup call {argv}")

    def reboot(self):
        """The loop devices are gone, and with them the VG on them (until attached)."""
        self.loops.clear()
        self.missing_vg, self.pvs = True, []

    def _udevadm(self, argv):
        assert argv[1] == "settle"
        return 0, "", ""

    def _systemctl(self, argv):
        verb, unit = argv[1], (argv[2] if len(argv) > 2 else None)
        if verb == "daemon-reload":
            return 0, "", ""
        if verb == "is-enabled":
            return (0, "enabled\n", "") if unit in self.enabled else (1, "disabled\n", "")
        if verb == "is-active":
            return (0, "active\n", "") if unit in self.active else (3, "inactive\n", "")
        if verb == "enable":
            self.enabled.add(unit)
        elif verb == "disable":
            self.enabled.discard(unit)
        elif verb == "start":
            self.active.add(unit)
        else:
            pytest.fail(f"unexpected systemctl call {argv}")
        return 0, "", ""

    # -- what tests look at --------------------------------------------------------------

    def commands(self, prog):
        return [c for c in self.calls if os.path.basename(c[0]) == prog]

    def changing_calls(self, since=0):
        """The calls (from index ``since`` on) that change the node."""
        out = []
        for c in self.calls[since:]:
            prog = os.path.basename(c[0])
            if prog in CHANGING or c[1:2] in (["--all"], ["--detach"]) \
                    or c[1:3] in (["--find", "--show"], ["-m", "venv"]) \
                    or (prog == "systemctl" and c[1] not in ("is-enabled", "is-active")) \
                    or c[1:4] == ["-m", "pip", "install"]:
                out.append(c)
        return out


def read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def write(path, text=""):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def snapshot(root):
    """Every file under root with its content (for 'nothing changed' checks)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out[rel] = "-> " + os.readlink(path)
            elif os.path.getsize(path) > 1024 * 1024:  # a (sparse) loop file
                st = os.stat(path)
                out[rel] = (st.st_size, st.st_mtime_ns, st.st_mode)
            elif os.path.isfile(path):
                with open(path, "rb") as handle:
                    out[rel] = (handle.read(), os.stat(path).st_mode)
            else:
                out[rel] = "dir"
    return out


class Env:
    """A fake node: its root dir, its runner, its tools and its processes."""

    def __init__(self, tmp_path):
        self.root = str(tmp_path / "node")
        os.makedirs(self.root)
        self.node = InstallNode(root=self.root)
        self.missing_tools = set()
        self.processes = []
        self.free = 100 * 1024 ** 3
        self.read_only = set()
        write(self.path("/etc/os-release"), DEBIAN)

    def path(self, host_path):
        return os.path.join(self.root, host_path.lstrip("/"))

    def which(self, name):
        return None if name in self.missing_tools else f"/usr/sbin/{name}"

    def run(self, *args):
        out, err = io.StringIO(), io.StringIO()
        code = install_main(["--root", self.root, "--source", REPO, *args], runner=self.node,
                      processes=self.processes, which=self.which, stdout=out, stderr=err)
        self.out, self.err = out.getvalue(), err.getvalue()
        return code

    def disk(self, dev="/dev/xvdz"):
        write(self.path(dev))
        return dev

    def venv_python(self):
        manifest = json.loads(read(self.path("/opt/slabvol/install.json")))
        return manifest["python"]


@pytest.fixture
def env(tmp_path, monkeypatch):
    e = Env(tmp_path)
    monkeypatch.setattr(Host, "free_bytes", lambda host, path: e.free)
    monkeypatch.setattr(Host, "read_only",
                        lambda host, path: any(path.startswith(p) for p in e.read_only))
    return e


# -- argument handling -------------------------------------------------------------------

def test_help_lists_the_options_and_the_known_plugin_dirs(capsys):
    assert install_main(["--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--disk", "--loopback", "--size", "--force", "--prefix", "--python",
                   "--wheelhouse", "--plugin-dir", "--uninstall", "--purge", "--dry-run",
                   "--root", "--skip-vg", "--nfd"):
        assert option in text
    for _, path in KNOWN_PLUGIN_DIRS:
        assert path in text


@pytest.mark.parametrize("args, message", [
    (["--purge"], "only works together with --uninstall"),
    (["--disk", "xvdz"], "must be an absolute path"),
    (["--disk", "/tmp/disk.img"], "not a device path under /dev/"),
    (["--disk", "/dev/xvdz", "--loopback"], "choose one of --disk and --loopback"),
    (["--loopback", "--skip-vg"], "choose one of"),
    (["--size", "20G"], "it needs --loopback"),
    (["--loopback", "--size", "ten"], "is not a size"),
    (["--loopback", "--size", "100M"], "too small"),
    (["--loopback", "/var/lib/my disk.img"], "may only contain"),
    (["--loopback", "relative.img"], "must be an absolute path"),
    (["--uninstall", "--disk", "/dev/xvdz"], "cannot be combined with --uninstall"),
    (["--python", "/no/such/python"], "no such executable"),
    (["--wheelhouse", "/no/such/dir"], "no such directory"),
    (["--python", sys.executable, "--wheelhouse", "/tmp"], "no environment is built"),
    (["--prefix", "opt/slabvol"], "must be an absolute path"),
    (["--prefix", "/"], "a dir of its own"),
    (["--frobnicate"], "unrecognized arguments"),
    (["--nfd", "features.d/slabvol"], "must be an absolute path"),
    (["--nfd", "/etc/kubernetes/node-feature-discovery/features.d/.slabvol"], "skips dot-files"),
    (["--nfd", "/etc/features.d/my file"], "may only contain"),
    (["--uninstall", "--nfd"], "cannot be combined with --uninstall"),
])
def test_bad_arguments_are_refused_and_change_nothing(env, args, message):
    before = snapshot(env.root)
    assert env.run(*args) == 2
    assert message in env.err
    assert env.err.startswith("install.sh: error: ")
    assert env.node.calls == []
    assert snapshot(env.root) == before


def test_parse_size_understands_binary_suffixes():
    assert parse_size("20G") == 20 * 1024 ** 3
    assert parse_size("512M") == 512 * MIB
    assert parse_size("1TiB") == 1024 ** 4
    assert parse_size("2gb") == 2 * 1024 ** 3
    assert human_size(20 * 1024 ** 3) == "20G"


def test_without_root_privileges_it_refuses_before_doing_anything(monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    node = InstallNode()
    assert install_main(["--source", REPO, "--skip-vg"], runner=node, processes=[]) == 1
    assert "run it as root" in capsys.readouterr().err
    assert node.calls == []


def test_a_broken_config_file_stops_the_install_naming_the_file(env):
    write(env.path("/etc/slabvol/slabvol.conf"), "[slabvol]\nvolume_group = \n  bad\n[[\n")
    assert env.run("--skip-vg") == 1
    assert "/etc/slabvol/slabvol.conf" in env.err
    assert env.node.changing_calls() == []


# -- prerequisites -----------------------------------------------------------------------

def test_missing_tools_are_named_with_the_command_that_installs_them(env):
    env.missing_tools = {"pvcreate", "vgcreate", "mkfs.ext4", "flock"}
    before = snapshot(env.root)
    assert env.run("--skip-vg") == 1
    assert "pvcreate, vgcreate" in env.err and "mkfs.ext4" in env.err and "flock" in env.err
    assert "`apt-get install -y lvm2 e2fsprogs util-linux`" in env.err
    assert env.node.changing_calls() == []
    assert snapshot(env.root) == before


def test_the_install_hint_follows_the_distribution(env):
    write(env.path("/etc/os-release"), ROCKY)
    env.missing_tools = {"lvs", "mount"}
    assert env.run("--skip-vg") == 1
    assert "`dnf install -y lvm2 util-linux`" in env.err


def test_an_unknown_distribution_gets_both_hints(env):
    os.remove(env.path("/etc/os-release"))
    env.missing_tools = {"lvs"}
    assert env.run("--skip-vg") == 1
    assert "apt-get install -y lvm2" in env.err and "dnf install -y lvm2" in env.err


def test_the_disk_tools_are_only_needed_with_disk(env):
    env.missing_tools = {"wipefs", "lsblk", "losetup"}
    assert env.run("--skip-vg") == 0
    env.disk()
    assert env.run("--disk", "/dev/xvdz") == 1
    assert "wipefs, lsblk" in env.err


def test_a_missing_venv_module_is_named(env):
    env.node.venv_module = False
    assert env.run("--skip-vg") == 1
    assert "venv/ensurepip" in env.err
    assert f"apt-get install -y python3.{sys.version_info[1]}-venv" in env.err


def test_missing_xfs_tools_only_warn(env):
    env.missing_tools = {"mkfs.xfs"}
    assert env.run("--skip-vg") == 0
    assert "warning: mkfs.xfs is not installed" in env.err
    assert "xfsprogs" in env.err


# -- the disk: safety checks ---------------------------------------------------------------

def refused(env):
    """The run failed and changed nothing on the node."""
    assert env.node.changing_calls() == []
    assert not os.path.exists(env.path("/opt/slabvol"))
    assert not os.path.exists(env.path(DEFAULT_EXE))
    assert not os.path.exists(env.path("/etc/slabvol"))


def test_an_empty_disk_becomes_the_volume_group_with_room_for_many_slabs(env):
    dev = env.disk()
    assert env.run("--disk", dev) == 0, env.err
    assert env.node.commands("pvcreate") == [["pvcreate", "--metadatasize", "64m", dev]]
    assert env.node.commands("vgcreate") == [["vgcreate", "slabvol", dev]]
    assert env.node.commands("wipefs")[0] == ["wipefs", "--no-act", "--json", dev]
    assert ["wipefs", "--all", dev] not in env.node.calls
    assert env.node.pv_owners() == {dev: "slabvol"}


def test_the_volume_group_name_comes_from_the_config(env):
    write(env.path("/etc/slabvol/slabvol.conf"), "[slabvol]\nvolume_group = ci_cache\n")
    dev = env.disk()
    assert env.run("--disk", dev) == 0, env.err
    assert env.node.commands("vgcreate") == [["vgcreate", "ci_cache", dev]]


@pytest.mark.parametrize("signatures, found", [
    ([{"type": "gpt", "offset": "0x200"}, {"type": "PMBR", "offset": "0x1fe"},
      {"type": "gpt", "offset": "0x9ffffe00"}], "a partition table (gpt at offset 0x200)"),
    ([{"type": "dos", "offset": "0x1fe"}], "a partition table (dos at offset 0x1fe)"),
    ([{"type": "ext4", "offset": "0x438", "label": "data"}],
     "a filesystem or other signature (ext4 labelled 'data' at offset 0x438)"),
    ([{"type": "xfs", "offset": "0x0"}], "a filesystem or other signature (xfs at offset 0x0)"),
    ([{"type": "LVM2_member", "offset": "0x218"}], "LVM metadata (LVM2_member at offset 0x218)"),
])
def test_a_disk_holding_something_is_refused_saying_what_was_found(env, signatures, found):
    dev = env.disk()
    env.node.signatures[dev] = signatures
    assert env.run("--disk", dev) == 1
    assert f"refusing to use {dev}: it holds {found}" in env.err
    assert "--force" in env.err
    assert "PMBR" not in env.err  # the protective MBR of a GPT disk is not news
    refused(env)


def test_a_disk_of_another_volume_group_is_refused_naming_it(env):
    dev = env.disk()
    env.node.other_pvs[dev] = "data_vg"
    env.node.signatures[dev] = [{"type": "LVM2_member", "offset": "0x218"}]
    assert env.run("--disk", dev) == 1
    assert "LVM metadata of another volume group, 'data_vg'" in env.err
    assert env.err.count("LVM") == 1  # said once, not again from wipefs
    refused(env)


def test_a_physical_volume_without_volume_group_is_refused(env):
    dev = env.disk()
    env.node.other_pvs[dev] = ""
    assert env.run("--disk", dev) == 1
    assert "an LVM physical volume that belongs to no volume group" in env.err
    refused(env)


def test_partitions_are_reported(env):
    dev = env.disk()
    env.node.lsblk[dev] = {"name": dev, "type": "disk", "children": [
        {"name": f"{dev}1", "type": "part"}, {"name": f"{dev}2", "type": "part"}]}
    assert env.run("--disk", dev) == 1
    assert f"2 partition(s): {dev}1, {dev}2" in env.err
    refused(env)


@pytest.mark.parametrize("tree, blocker", [
    ({"type": "disk", "children": [{"name": "/dev/xvdz1", "type": "part",
                                    "mountpoint": "/data"}]},
     "/dev/xvdz1 is mounted at /data"),
    ({"type": "disk", "mountpoint": "[SWAP]"}, "/dev/xvdz is swap"),
    ({"type": "disk", "children": [{"name": "/dev/mapper/data-lv", "type": "lvm"}]},
     "/dev/mapper/data-lv (lvm) is active on it"),
    ({"type": "disk", "mountpoints": ["/srv", None]}, "/dev/xvdz is mounted at /srv"),
])
def test_a_disk_in_use_is_refused_even_with_force(env, tree, blocker):
    dev = env.disk()
    env.node.lsblk[dev] = dict(tree, name=dev)
    env.node.signatures[dev] = [{"type": "ext4", "offset": "0x438"}]
    assert env.run("--disk", dev, "--force") == 1
    assert blocker in env.err
    assert "--force does not override this" in env.err
    refused(env)


def test_force_wipes_the_signatures_first(env):
    dev = env.disk()
    env.node.other_pvs[dev] = "old_vg"
    env.node.signatures[dev] = [{"type": "LVM2_member", "offset": "0x218"}]
    assert env.run("--disk", dev, "--force") == 0, env.err
    assert "warning: --force: wiping LVM metadata of another volume group, 'old_vg'" in env.err
    changes = [c for c in env.node.changing_calls() if c[0] in ("wipefs", "pvcreate", "vgcreate")]
    assert changes == [["wipefs", "--all", dev],
                            ["pvcreate", "--metadatasize", "64m", dev],
                            ["vgcreate", "slabvol", dev]]


def test_old_util_linux_without_wipefs_json_falls_back_to_blkid(env):
    dev = env.disk()
    env.node.wipefs_json = False
    env.node.signatures[dev] = [{"type": "ext4"}]
    assert env.run("--disk", dev) == 1
    assert ["blkid", "--probe", "--output", "export", dev] in env.node.calls
    assert "ext4" in env.err
    refused(env)


def test_a_device_that_does_not_exist_is_refused(env):
    assert env.run("--disk", "/dev/xvdq") == 1
    assert "/dev/xvdq does not exist" in env.err
    refused(env)


def test_a_volume_group_already_on_the_disk_is_left_alone(env):
    dev = env.disk()
    env.node.make_vg(dev)
    env.node.signatures[dev] = [{"type": "LVM2_member", "offset": "0x218"}]
    assert env.run("--disk", dev) == 0, env.err
    assert "unchanged: volume group slabvol already on /dev/xvdz" in env.out
    assert env.node.commands("wipefs") == env.node.commands("lsblk") == []
    assert not {"pvcreate", "vgcreate", "vgchange"} & {c[0] for c in env.node.calls}


def test_the_volume_group_on_another_disk_is_not_extended(env):
    dev = env.disk()
    env.node.make_vg("/dev/xvdy")
    assert env.run("--disk", dev) == 1
    assert "already exists on /dev/xvdy" in env.err and "vgextend slabvol /dev/xvdz" in env.err
    refused(env)


def test_without_a_volume_group_and_without_disk_or_loopback_it_says_what_to_do(env):
    assert env.run() == 1
    assert "there is no volume group 'slabvol'" in env.err
    assert "--disk" in env.err and "--loopback" in env.err and "--skip-vg" in env.err
    refused(env)


def test_an_upgrade_run_keeps_the_existing_volume_group(env):
    env.node.make_vg("/dev/xvdz")
    assert env.run() == 0, env.err
    assert "unchanged: volume group slabvol exists on /dev/xvdz" in env.out


def test_a_failed_vgcreate_leaves_no_physical_volume_behind(env):
    dev = env.disk()
    env.node.failures["vgcreate"] = (5, "  vgcreate failed for some reason\n")
    assert env.run("--disk", dev) == 1
    assert "could not create volume group slabvol on /dev/xvdz" in env.err
    assert "vgcreate failed for some reason" in env.err
    assert ["pvremove", dev] in env.node.calls


# -- loopback -------------------------------------------------------------------------------

def test_loopback_creates_a_sparse_file_a_volume_group_and_a_boot_unit(env):
    os.makedirs(env.path("/run/systemd/system"))
    assert env.run("--loopback", "--size", "2G") == 0, env.err
    image = env.path(DEFAULT_LOOP_FILE)
    assert os.path.getsize(image) == 2 * 1024 ** 3
    assert os.stat(image).st_blocks == 0  # sparse
    assert stat.S_IMODE(os.stat(image).st_mode) == 0o600
    assert env.node.commands("losetup")[-1] == ["losetup", "--find", "--show", image]
    assert env.node.commands("pvcreate") == [["pvcreate", "--metadatasize", "64m",
                                              "/dev/loop0"]]
    assert env.node.commands("vgcreate") == [["vgcreate", "slabvol", "/dev/loop0"]]
    unit = read(env.path(f"/etc/systemd/system/{LOOP_UNIT}"))
    assert f"losetup --associated {DEFAULT_LOOP_FILE} | grep -q . || losetup --find " \
           f"{DEFAULT_LOOP_FILE}" in unit
    assert "vgchange --activate y slabvol" in unit
    assert "Before=kubelet.service" in unit and "WantedBy=multi-user.target" in unit
    assert ["systemctl", "enable", LOOP_UNIT] in env.node.calls
    assert ["systemctl", "start", LOOP_UNIT] in env.node.calls
    manifest = json.loads(read(env.path("/opt/slabvol/install.json")))
    assert manifest["loopback_file"] == DEFAULT_LOOP_FILE


def test_loopback_is_idempotent(env):
    os.makedirs(env.path("/run/systemd/system"))
    assert env.run("--loopback", "/var/lib/ci/vg.img", "--size", "1G") == 0, env.err
    before, calls = snapshot(env.root), len(env.node.calls)
    assert env.run("--loopback", "/var/lib/ci/vg.img", "--size", "1G") == 0, env.err
    assert snapshot(env.root) == before
    assert env.node.changing_calls(since=calls) == []
    assert "Nothing changed" in env.out
    assert "unchanged: volume group slabvol already on /dev/loop0 (/var/lib/ci/vg.img)" \
        in env.out


def test_after_a_reboot_the_loop_file_is_attached_and_activated_not_recreated(env):
    assert env.run("--loopback", "--size", "1G") == 0, env.err
    # reboot: the loop device is gone, the file keeps its LVM label
    image = env.path(DEFAULT_LOOP_FILE)
    env.node.reboot()
    env.node.signatures[image] = [{"type": "LVM2_member", "offset": "0x218"}]
    env.node.calls.clear()
    assert env.run("--loopback") == 0, env.err
    assert ["losetup", "--find", "--show", image] in env.node.calls
    assert ["vgchange", "--activate", "y", "slabvol"] in env.node.calls
    assert env.node.commands("pvcreate") == env.node.commands("vgcreate") == []
    assert "not resized" not in env.err  # --size was not given


def test_a_loop_file_of_another_volume_group_is_detached_again_and_refused(env):
    image = env.path("/var/lib/other.img")
    write(image)
    os.truncate(image, 1024 ** 3)
    env.node.signatures[image] = [{"type": "LVM2_member", "offset": "0x218"}]
    env.node.loop_vgs[image] = "someone_elses"
    assert env.run("--loopback", "/var/lib/other.img") == 1
    assert "LVM metadata of another volume group, 'someone_elses'" in env.err
    assert env.node.loops == {}  # attached to look, detached again
    assert os.path.exists(image)
    assert env.node.commands("pvcreate") == []


def test_an_existing_file_with_a_filesystem_is_refused_unless_forced(env):
    image = env.path("/srv/data.img")
    write(image)
    os.truncate(image, 1024 ** 3)
    env.node.signatures[image] = [{"type": "ext4", "offset": "0x438"}]
    assert env.run("--loopback", "/srv/data.img") == 1
    assert "refusing to use /srv/data.img: it holds a filesystem or other signature (ext4" \
        in env.err
    refused(env)
    assert env.run("--loopback", "/srv/data.img", "--force") == 0, env.err
    assert ["wipefs", "--all", "/dev/loop0"] in env.node.calls


def test_a_loop_file_bigger_than_the_free_space_is_refused_unless_forced(env):
    env.free = 5 * 1024 ** 3
    assert env.run("--loopback", "--size", "20G") == 1
    assert "has 5G free, less than --size 20G" in env.err
    assert "I/O errors" in env.err
    refused(env)
    assert not os.path.exists(env.path(DEFAULT_LOOP_FILE))
    assert env.run("--loopback", "--size", "20G", "--force") == 0, env.err


def test_a_failed_vgcreate_on_a_new_loop_file_undoes_the_file_and_the_loop(env):
    env.node.failures["vgcreate"] = (5, "  no\n")
    assert env.run("--loopback", "--size", "1G") == 1
    assert "could not create volume group" in env.err
    assert env.node.loops == {}
    assert not os.path.exists(env.path(DEFAULT_LOOP_FILE))


def test_loopback_without_systemd_warns_how_to_reattach_at_boot(env):
    assert env.run("--loopback", "--size", "1G") == 0, env.err
    assert "systemd is not running here" in env.err
    assert f"losetup --find {DEFAULT_LOOP_FILE} && vgchange --activate y slabvol" in env.err
    assert env.node.commands("systemctl") == []
    assert os.path.exists(env.path(f"/etc/systemd/system/{LOOP_UNIT}"))


def test_loopback_when_the_volume_group_is_on_a_disk_is_refused(env):
    env.node.make_vg("/dev/xvdz")
    assert env.run("--loopback") == 1
    assert "already exists on /dev/xvdz" in env.err
    refused(env)


# -- plugin dir detection -------------------------------------------------------------------

def detected(env, processes):
    env.processes = processes
    host = Host(env.root, runner=env.node, processes=processes, out=io.StringIO())
    return resolve_plugin_dir(host, None, detect_kubelet(host))


@pytest.mark.parametrize("argv, expected", [
    (["/usr/bin/kubelet", "--volume-plugin-dir=/home/kubernetes/flexvolume", "--v=2"],
     "/home/kubernetes/flexvolume"),
    (["kubelet", "--volume-plugin-dir", "/var/lib/kubelet/volumeplugins/"],
     "/var/lib/kubelet/volumeplugins"),
    (["/usr/local/bin/hyperkube", "kubelet", "--volume-plugin-dir=/opt/flex"], "/opt/flex"),
    (["/usr/bin/kubelet", "--kubeconfig=/etc/kubernetes/kubelet.conf"], DEFAULT_PLUGIN_DIR),
])
def test_the_plugin_dir_comes_from_the_kubelet_flag(env, argv, expected):
    plugin_dir, why = detected(env, [(812, argv)])
    assert plugin_dir == expected
    assert "812" in why


def test_the_plugin_dir_comes_from_the_kubelet_config_file(env):
    write(env.path("/var/lib/kubelet/config.yaml"), textwrap.dedent("""\
        apiVersion: kubelet.config.k8s.io/v1beta1
        kind: KubeletConfiguration
        # volumePluginDir: /commented/out
        volumePluginDir: "/etc/kubernetes/kubelet-plugins/volume/exec"  # OpenShift
        cgroupDriver: systemd
        """))
    plugin_dir, why = detected(env, [(7, ["/usr/bin/kubelet",
                                          "--config=/var/lib/kubelet/config.yaml"])])
    assert plugin_dir == "/etc/kubernetes/kubelet-plugins/volume/exec"
    assert "volumePluginDir in /var/lib/kubelet/config.yaml" in why


def test_a_json_kubelet_config_works_too(env):
    write(env.path("/etc/kubernetes/kubelet.json"),
          '{"kind": "KubeletConfiguration",\n "volumePluginDir": "/opt/flex",\n "x": 1}\n')
    plugin_dir, _ = detected(env, [(7, ["kubelet", "--config", "/etc/kubernetes/kubelet.json"])])
    assert plugin_dir == "/opt/flex"


def test_the_flag_wins_over_the_config_file_and_drop_ins_over_the_file(env):
    write(env.path("/etc/k/config.yaml"), "volumePluginDir: /from/config\n")
    write(env.path("/etc/k/conf.d/10-a.conf"), "volumePluginDir: /from/drop-in-10\n")
    write(env.path("/etc/k/conf.d/20-b.conf"), "volumePluginDir: /from/drop-in-20\n")
    write(env.path("/etc/k/conf.d/30-c.conf"), "maxPods: 50\n")
    base = ["kubelet", "--config=/etc/k/config.yaml"]
    assert detected(env, [(1, base)])[0] == "/from/config"
    assert detected(env, [(1, base + ["--config-dir=/etc/k/conf.d"])])[0] == "/from/drop-in-20"
    assert detected(env, [(1, base + ["--config-dir=/etc/k/conf.d",
                                      "--volume-plugin-dir=/from/flag"])])[0] == "/from/flag"


def test_a_containerised_kubelet_config_is_read_through_its_proc_root(env):
    write(env.path("/proc/99/root/etc/kubelet/config.yaml"), "volumePluginDir: /in/container\n")
    plugin_dir, _ = detected(env, [(99, ["kubelet", "--config=/etc/kubelet/config.yaml"])])
    assert plugin_dir == "/in/container"


@pytest.mark.parametrize("argv", [
    ["/usr/local/bin/k3s", "server", "--kubelet-arg=volume-plugin-dir=/var/lib/k3s-flex"],
    ["/usr/local/bin/k3s", "agent", "--kubelet-arg", "volume-plugin-dir=/var/lib/k3s-flex"],
    ["/usr/local/bin/k3s", "server", "--kubelet-arg=--volume-plugin-dir=/var/lib/k3s-flex"],
])
def test_k3s_kubelet_args_are_understood(env, argv):
    plugin_dir, why = detected(env, [(500, argv)])
    assert plugin_dir == "/var/lib/k3s-flex"
    assert "k3s" in why


def test_k3s_with_hidden_arguments_is_read_from_its_config_file(env):
    write(env.path("/etc/rancher/k3s/config.yaml"), textwrap.dedent("""\
        write-kubeconfig-mode: "0644"
        kube-controller-manager-arg:
          - "flex-volume-plugin-dir=/not/this"
        kubelet-arg:
          # - "volume-plugin-dir=/commented"
          - "max-pods=200"
          - "volume-plugin-dir=/var/lib/kubelet/volumeplugins"
        """))
    # k3s rewrites its process title: /proc/PID/cmdline is one string
    plugin_dir, why = detected(env, [(500, ["/usr/local/bin/k3s server"])])
    assert plugin_dir == "/var/lib/kubelet/volumeplugins"
    assert "/etc/rancher/k3s/config.yaml" in why


def test_k3s_args_in_its_systemd_unit_are_found(env):
    write(env.path("/etc/systemd/system/k3s-agent.service"), textwrap.dedent("""\
        [Service]
        ExecStart=/usr/local/bin/k3s \\
            agent \\
            '--kubelet-arg' \\
            'volume-plugin-dir=/opt/k3s/flex' \\
        """))
    assert detected(env, [(500, ["/usr/local/bin/k3s agent"])])[0] == "/opt/k3s/flex"


def test_k3s_without_settings_uses_the_kubelet_default(env):
    plugin_dir, why = detected(env, [(500, ["/usr/local/bin/k3s server"])])
    assert plugin_dir == DEFAULT_PLUGIN_DIR
    assert "k3s" in why and "kubelet default" in why


def test_microk8s_kubelite_args_file_is_read(env):
    write(env.path("/var/snap/microk8s/current/args/kubelet"),
          "--root-dir=/var/snap/microk8s/common/var/lib/kubelet\n"
          "--volume-plugin-dir=/var/snap/microk8s/common/flex\n")
    argv = ["/snap/microk8s/123/kubelite",
            "--kubelet-args-file=/var/snap/microk8s/current/args/kubelet"]
    assert detected(env, [(3, argv)])[0] == "/var/snap/microk8s/common/flex"


def test_without_a_kubelet_the_default_is_used(env):
    plugin_dir, why = detected(env, [(1, ["/sbin/init"]), (2, ["sshd", "-D"])])
    assert plugin_dir == DEFAULT_PLUGIN_DIR
    assert "no running kubelet" in why


def test_processes_are_read_from_proc(env):
    write(env.path("/proc/4242/cmdline"),
          "/usr/bin/kubelet\0--volume-plugin-dir=/from/proc\0--v=2\0")
    write(env.path("/proc/self/cmdline"), "python3\0")
    write(env.path("/proc/17/cmdline"), "")  # a kernel thread
    host = Host(env.root, runner=env.node, out=io.StringIO())
    assert (4242, ["/usr/bin/kubelet", "--volume-plugin-dir=/from/proc", "--v=2"]) \
        in host.processes()
    assert detect_kubelet(host).plugin_dir == "/from/proc"


def test_kubelets_that_disagree_need_plugin_dir(env):
    env.processes = [(1, ["kubelet", "--volume-plugin-dir=/a"]),
                     (2, ["kubelet", "--volume-plugin-dir=/b"])]
    assert env.run("--skip-vg") == 1
    assert "several kubelets" in env.err and "--plugin-dir" in env.err
    assert env.run("--skip-vg", "--plugin-dir", "/a") == 0, env.err


def test_a_plugin_dir_the_kubelet_does_not_use_is_warned_about(env):
    env.processes = [(1, ["kubelet", "--volume-plugin-dir=/home/kubernetes/flexvolume"])]
    assert env.run("--skip-vg", "--plugin-dir", "/opt/flex") == 0, env.err
    assert "not where the running kubelet looks (/home/kubernetes/flexvolume" in env.err
    assert os.path.exists(env.path("/opt/flex/ax~vol_plugin/vol_plugin"))


def test_the_detected_plugin_dir_is_used_and_reported(env):
    env.processes = [(1, ["kubelet", "--volume-plugin-dir=/home/kubernetes/flexvolume"])]
    assert env.run("--skip-vg") == 0, env.err
    assert "plugin dir: /home/kubernetes/flexvolume (the running kubelet's " \
           "--volume-plugin-dir flag (pid 1))" in env.out
    assert os.path.exists(env.path("/home/kubernetes/flexvolume/ax~vol_plugin/vol_plugin"))


def test_a_read_only_plugin_dir_is_refused_with_the_way_out(env):
    env.read_only = {DEFAULT_PLUGIN_DIR}
    assert env.run("--skip-vg") == 1
    assert "read-only filesystem" in env.err
    assert "--plugin-dir /var/lib/kubelet/volumeplugins" in env.err
    assert "--volume-plugin-dir" in env.err
    refused(env)


def test_the_kubelet_root_dir_goes_into_a_new_config(env):
    env.processes = [(1, ["kubelet", "--root-dir=/data/kubelet"])]
    assert env.run("--skip-vg") == 0, env.err
    config = config_mod.load(env.path("/etc/slabvol/slabvol.conf"))
    assert config.kubelet_dir == "/data/kubelet"


def test_an_existing_config_with_another_kubelet_dir_is_warned_about(env):
    write(env.path("/etc/slabvol/slabvol.conf"), "[slabvol]\n")
    env.processes = [(1, ["kubelet", "--root-dir=/data/kubelet"])]
    assert env.run("--skip-vg") == 0, env.err
    assert "--root-dir /data/kubelet" in env.err and "kubelet_dir" in env.err


# -- config, idempotency -----------------------------------------------------------------------

def test_the_default_config_lists_every_key_commented_out_and_loads_as_the_defaults(tmp_path):
    keys = set(inspect.signature(config_mod.Config).parameters) - {"path"}
    assert set(CONFIG_HELP) == keys
    text = default_config_text()
    for key in keys:
        assert f"\n# {key} =" in text
    path = tmp_path / "slabvol.conf"
    path.write_text(text)
    loaded = config_mod.load(str(path))
    assert loaded == config_mod.Config(path=str(path))
    # uncommenting every key gives the same values
    active = "\n".join(line[2:] if line.startswith("# ") and " = " in line else line
                       for line in text.splitlines())
    path.write_text(active)
    assert config_mod.load(str(path)) == config_mod.Config(path=str(path))


def test_the_config_is_written_once_and_never_overwritten(env):
    env.node.make_vg("/dev/xvdz")
    assert env.run() == 0, env.err
    conf = env.path("/etc/slabvol/slabvol.conf")
    assert "# volume_group = slabvol" in read(conf)
    write(conf, "[slabvol]\ncache_scope = node\n")
    assert env.run() == 0, env.err
    assert read(conf) == "[slabvol]\ncache_scope = node\n"
    assert "unchanged: /etc/slabvol/slabvol.conf exists, not touched" in env.out


def test_a_second_run_changes_nothing(env):
    dev = env.disk()
    assert env.run("--disk", dev) == 0, env.err
    before, count = snapshot(env.root), len(env.node.calls)
    assert env.run("--disk", dev) == 0, env.err
    assert snapshot(env.root) == before
    assert env.node.changing_calls(since=count) == []
    assert "Nothing changed: slabvol is installed and up to date." in env.out
    assert "  changed:" not in env.out


def test_dry_run_checks_everything_and_changes_nothing(env):
    dev = env.disk()
    before = snapshot(env.root)
    assert env.run("--disk", dev, "--dry-run") == 0, env.err
    assert snapshot(env.root) == before
    assert env.node.changing_calls() == []
    assert "would: created LVM physical volume on /dev/xvdz" in env.out
    assert "would: installed " + DEFAULT_EXE in env.out
    assert "Would make" in env.out
    # and the checks still run: a bad disk fails the dry run
    env.node.signatures[dev] = [{"type": "ext4"}]
    assert env.run("--disk", dev, "--dry-run") == 1


# -- runtime and the driver executable ---------------------------------------------------------

def test_the_runtime_is_a_virtual_environment_under_the_prefix(env):
    assert env.run("--skip-vg", "--prefix", "/opt/sv") == 0, env.err
    venv = [c for c in env.node.calls if c[1:3] == ["-m", "venv"]]
    assert len(venv) == 1 and venv[0][0] == sys.executable
    assert venv[0][3].startswith(env.path("/opt/sv/venvs/" + __version__ + "-"))
    pip = [c for c in env.node.calls if c[1:4] == ["-m", "pip", "install"]][0]
    assert "--no-index" not in pip
    source = pip[-1]
    assert not os.path.exists(source)  # a scratch copy of the checkout, removed again
    assert os.path.exists(env.path(venv[0][3][len(env.root):] + "/" + VENV_COMPLETE))


def test_a_wheelhouse_installs_offline(env, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / f"slabvol-{__version__}-py3-none-any.whl").write_text("")
    assert env.run("--skip-vg", "--wheelhouse", str(wheels)) == 0, env.err
    pip = [c for c in env.node.calls if c[1:4] == ["-m", "pip", "install"]][0]
    assert pip[-4:] == ["--no-index", "--find-links", str(wheels), f"slabvol=={__version__}"]


def test_a_failed_pip_install_says_what_to_do_and_leaves_no_half_environment(env):
    original = env.node.python

    def failing_pip(argv):
        if argv[1:4] == ["-m", "pip", "install"]:
            return 1, "", "ERROR: Could not find a version that satisfies the requirement " \
                          "click>=7.0\n"
        return original(argv)

    env.node.python = failing_pip
    assert env.run("--skip-vg") == 1
    assert "could not install slabvol" in env.err and "click>=7.0" in env.err
    assert "--wheelhouse" in env.err
    assert os.listdir(env.path("/opt/slabvol/venvs")) == []
    assert not os.path.exists(env.path(DEFAULT_EXE))


def test_with_python_no_environment_is_built(env):
    env.node.python_has_slabvol.add(sys.executable)
    assert env.run("--skip-vg", "--python", sys.executable) == 0, env.err
    assert not [c for c in env.node.calls if c[1:3] == ["-m", "venv"]]
    assert read(env.path(DEFAULT_EXE)).startswith(f"#!{sys.executable}\n")


def test_a_python_without_slabvol_is_refused(env):
    assert env.run("--skip-vg", "--python", sys.executable) == 1
    assert "cannot import slabvol, click and psutil" in env.err
    assert "No module named 'slabvol'" in env.err
    refused(env)


def test_the_executable_is_installed_atomically_complete_and_executable(env):
    assert env.run("--skip-vg") == 0, env.err
    exe = env.path(DEFAULT_EXE)
    python = env.venv_python()
    with open(os.path.join(REPO, "vol_plugin"), encoding="utf-8") as handle:
        original = handle.read()
    assert read(exe) == f"#!{python} -S\n" + original.split("\n", 1)[1]  # (see vol_plugin)
    assert python.startswith("/opt/slabvol/venvs/")  # a host path, not under --root
    assert stat.S_IMODE(os.stat(exe).st_mode) == 0o755
    assert os.listdir(os.path.dirname(exe)) == ["vol_plugin"]  # no temp files left
    (tmp, final_then), = env.node.init_checked
    assert os.path.dirname(tmp) == os.path.dirname(exe)  # same dir: rename is atomic
    assert final_then is None  # checked before it was put in place
    link = env.path(SYMLINK)
    assert os.readlink(link) == DEFAULT_EXE


def test_the_init_check_runs_the_driver_as_the_kubelet_will_with_its_interpreter_flags(env):
    """The venv's driver runs with -S (vol_plugin adds site-packages itself): checked
    without it, a driver that only imports through site would pass and then fail every
    kubelet call. A --python driver keeps site, and is checked with it."""
    assert env.run("--skip-vg") == 0, env.err
    assert read(env.path(DEFAULT_EXE)).startswith(f"#!{env.venv_python()} -S\n")
    assert env.node.init_flags == [["-S"]]
    env.node.python_has_slabvol.add(sys.executable)
    assert env.run("--skip-vg", "--python", sys.executable) == 0, env.err
    assert env.node.init_flags == [["-S"], []]


def test_a_new_driver_that_fails_init_does_not_replace_the_old_one(env, monkeypatch):
    assert env.run("--skip-vg") == 0, env.err
    exe = env.path(DEFAULT_EXE)
    old = read(exe)
    # a new checkout (another source hash) whose driver is broken
    env.node.init_answer = (1, '{"status": "Failure", "message": "vol_plugin cannot start"}')
    monkeypatch.setattr("slabvol.install.runtime.source_hash", lambda source, python: "fffffffffff0")
    assert env.run("--skip-vg") == 1
    assert "the new driver does not answer `init` correctly" in env.err
    assert "vol_plugin cannot start" in env.err
    assert read(exe) == old
    assert os.listdir(os.path.dirname(exe)) == ["vol_plugin"]
    assert env.node.init_checked[-1][1] == old  # the old one was in place during the check


def test_an_upgrade_builds_a_new_environment_switches_and_removes_the_old_one(env, monkeypatch):
    assert env.run("--skip-vg") == 0, env.err
    old_python = env.venv_python()
    monkeypatch.setattr("slabvol.install.runtime.source_hash", lambda source, python: "0123456789ab")
    assert env.run("--skip-vg") == 0, env.err
    new_python = env.venv_python()
    assert new_python == f"/opt/slabvol/venvs/{__version__}-0123456789ab/bin/python"
    assert read(env.path(DEFAULT_EXE)).startswith(f"#!{new_python} -S\n")
    assert os.listdir(env.path("/opt/slabvol/venvs")) == [f"{__version__}-0123456789ab"]
    assert f"removed old virtual environment {old_python[:-len('/bin/python')]}" in env.out


def test_an_incomplete_environment_is_rebuilt(env):
    assert env.run("--skip-vg") == 0, env.err
    venv = env.path(env.venv_python()[:-len("/bin/python")])
    os.remove(os.path.join(venv, VENV_COMPLETE))
    assert env.run("--skip-vg") == 0, env.err
    assert "removed incomplete virtual environment" in env.out
    assert os.path.exists(os.path.join(venv, VENV_COMPLETE))


def test_a_too_long_interpreter_path_is_refused(env):
    assert env.run("--skip-vg", "--prefix", "/opt/" + "x" * 120) == 1
    assert "too long for a #! line" in env.err
    refused(env)


def test_a_foreign_file_at_the_symlink_path_is_left_alone(env):
    write(env.path(SYMLINK), "#!/bin/sh\necho mine\n")
    assert env.run("--skip-vg") == 0, env.err
    assert read(env.path(SYMLINK)) == "#!/bin/sh\necho mine\n"
    assert "left alone" in env.err and f"{DEFAULT_EXE} status" in env.err


# -- uninstall and purge -------------------------------------------------------------------------

def installed_loopback_with_slabs(env):
    os.makedirs(env.path("/run/systemd/system"))
    assert env.run("--loopback", "--size", "1G") == 0, env.err
    env.node.add_lv("slab_a", 1024, ["slabvol.state=free", "slabvol.v=1"])
    env.node.add_lv("slab_b", 1024, ["slabvol.state=in-use", "slabvol.v=1"])
    env.node.calls.clear()


def mount_slab(env, name):
    env.node.mount_by_hand(env.node.device(name),
                           "/var/lib/kubelet/pods/u/volumes/ax~vol_plugin/d")


def test_uninstall_removes_driver_and_runtime_and_keeps_vg_slabs_config_and_loop(env):
    installed_loopback_with_slabs(env)
    assert env.run("--uninstall") == 0, env.err
    assert not os.path.exists(env.path(DEFAULT_EXE))
    assert not os.path.exists(env.path(os.path.dirname(DEFAULT_EXE)))
    assert not os.path.lexists(env.path(SYMLINK))
    assert not os.path.exists(env.path("/opt/slabvol"))
    assert os.path.exists(env.path("/etc/slabvol/slabvol.conf"))
    assert os.path.exists(env.path(DEFAULT_LOOP_FILE))
    assert os.path.exists(env.path(f"/etc/systemd/system/{LOOP_UNIT}"))
    assert env.node.changing_calls() == []
    assert len(env.node.lvs) == 2
    assert "Kept volume group slabvol with 2 slab(s)" in env.out
    assert "--uninstall --purge" in env.out


def test_uninstall_refuses_while_slabs_are_mounted_unless_forced(env):
    installed_loopback_with_slabs(env)
    mount_slab(env, "slab_b")
    before = snapshot(env.root)
    assert env.run("--uninstall") == 1
    assert "slabs slab_b are mounted" in env.err and "--force" in env.err
    assert snapshot(env.root) == before
    assert env.run("--uninstall", "--force") == 0, env.err
    assert "warning: --force: slabs slab_b stay mounted" in env.err
    assert not os.path.exists(env.path(DEFAULT_EXE))


def test_purge_removes_the_slabs_the_vg_the_loop_file_the_unit_and_the_config(env):
    installed_loopback_with_slabs(env)
    assert env.run("--uninstall", "--purge") == 0, env.err
    assert env.node.commands("lvremove") == [["lvremove", *STRUCTURAL, "--yes", "slabvol/slab_a"],
                                             ["lvremove", *STRUCTURAL, "--yes", "slabvol/slab_b"]]
    assert ["vgremove", "slabvol"] in env.node.calls
    assert ["pvremove", "/dev/loop0"] in env.node.calls
    assert ["systemctl", "disable", LOOP_UNIT] in env.node.calls
    assert ["losetup", "--detach", "/dev/loop0"] in env.node.calls
    assert env.node.loops == {} and env.node.pv_owners() == {}
    for gone in (DEFAULT_LOOP_FILE, f"/etc/systemd/system/{LOOP_UNIT}",
                 "/etc/slabvol/slabvol.conf", "/opt/slabvol", DEFAULT_EXE):
        assert not os.path.exists(env.path(gone)), gone
    # the order: the driver goes first, so no new slab appears while the VG is purged
    out = env.out
    assert out.index(f"removed {DEFAULT_EXE}") < out.index("removed slab slabvol/slab_a")


def test_purge_only_removes_slabs_and_keeps_a_vg_with_other_lvs(env):
    installed_loopback_with_slabs(env)
    env.node.add_lv("precious", 8, ["backup"])
    assert env.run("--uninstall", "--purge") == 1
    removed = [c[-1] for c in env.node.commands("lvremove")]
    assert removed == ["slabvol/slab_a", "slabvol/slab_b"]
    assert "precious" in env.err and "it was kept" in env.err
    assert env.node.commands("vgremove") == [] and env.node.commands("pvremove") == []
    assert os.path.exists(env.path(DEFAULT_LOOP_FILE))
    assert env.node.loops == {"/dev/loop0": env.path(DEFAULT_LOOP_FILE)}


def test_an_incomplete_purge_keeps_the_config_that_names_the_volume_group(env):
    write(env.path("/etc/slabvol/slabvol.conf"), "[slabvol]\nvolume_group = ci_vg\n")
    env.node.make_vg("/dev/xvdz", "ci_vg")
    assert env.run() == 0, env.err
    env.node.add_lv("precious", 8)
    assert env.run("--uninstall", "--purge") == 1
    assert "then run ./install.sh --uninstall --purge again" in env.err
    assert read(env.path("/etc/slabvol/slabvol.conf")) == "[slabvol]\nvolume_group = ci_vg\n"
    env.node.lvs.clear()
    assert env.run("--uninstall", "--purge") == 0, env.err
    assert ["vgremove", "ci_vg"] in env.node.calls
    assert not os.path.exists(env.path("/etc/slabvol"))


def test_purge_removes_only_directories_of_its_own(env):
    # a loop file in a shared dir: the dir stays even when the purge leaves it empty
    assert env.run("--loopback", "/var/tmp/slabvol.img", "--size", "1G",
                   "--prefix", "/opt") == 0, env.err
    assert env.run("--uninstall", "--purge", "--prefix", "/opt") == 0, env.err
    assert not os.path.exists(env.path("/var/tmp/slabvol.img"))
    assert os.path.isdir(env.path("/var/tmp"))
    assert os.path.isdir(env.path("/opt"))
    assert not os.path.exists(env.path("/opt/venvs"))
    assert "removed empty directory /var/tmp" not in env.out


def test_purge_refuses_while_a_slab_is_mounted_even_with_force(env):
    installed_loopback_with_slabs(env)
    mount_slab(env, "slab_a")
    before = snapshot(env.root)
    assert env.run("--uninstall", "--purge", "--force") == 1
    assert "slabs slab_a are mounted" in env.err and "Nothing was removed" in env.err
    assert snapshot(env.root) == before
    assert env.node.changing_calls() == []


def test_purge_of_a_disk_volume_group_clears_the_disk_label(env):
    dev = env.disk()
    assert env.run("--disk", dev) == 0, env.err
    assert env.run("--uninstall", "--purge") == 0, env.err
    assert ["vgremove", "slabvol"] in env.node.calls
    assert ["pvremove", dev] in env.node.calls
    assert env.node.pv_owners() == {}
    assert not os.path.exists(env.path("/etc/slabvol/slabvol.conf"))


def test_uninstall_dry_run_changes_nothing(env):
    installed_loopback_with_slabs(env)
    before = snapshot(env.root)
    assert env.run("--uninstall", "--purge", "--dry-run") == 0, env.err
    assert snapshot(env.root) == before
    assert env.node.changing_calls() == []
    assert "would: removed slab slabvol/slab_a" in env.out


def test_uninstall_of_nothing_is_harmless(env):
    assert env.run("--uninstall") == 0, env.err
    assert f"unchanged: {DEFAULT_EXE} is not there" in env.out


# -- --nfd: the Node Feature Discovery feature file ----------------------------------------------

NFD_FILE = "/etc/kubernetes/node-feature-discovery/features.d/slabvol"
CONF = "/etc/slabvol/slabvol.conf"


def nfd_setting(env):
    return config_mod.load(env.path(CONF)).nfd_features_file


def test_nfd_sets_the_feature_file_in_a_new_config_and_makes_its_dir_world_readable(env):
    old = os.umask(0o077)  # nfd-worker runs as user 65534: the dirs must be 0755 anyway
    try:
        assert env.run("--skip-vg", "--nfd") == 0, env.err
    finally:
        os.umask(old)
    assert nfd_setting(env) == NFD_FILE
    assert "\nnfd_features_file = " + NFD_FILE + "\n" in read(env.path(CONF))
    for directory in ("/etc/kubernetes", "/etc/kubernetes/node-feature-discovery",
                      os.path.dirname(NFD_FILE)):
        assert stat.S_IMODE(os.stat(env.path(directory)).st_mode) == 0o755, directory
    assert not os.path.exists(env.path(NFD_FILE))  # the driver writes it, not the installer
    assert f"created directory {os.path.dirname(NFD_FILE)}" in env.out


def test_nfd_takes_another_path(env):
    assert env.run("--skip-vg", "--nfd", "/var/lib/nfd/features.d/slabvol") == 0, env.err
    assert nfd_setting(env) == "/var/lib/nfd/features.d/slabvol"
    assert os.path.isdir(env.path("/var/lib/nfd/features.d"))


def test_nfd_adds_the_key_to_an_existing_config_once_and_keeps_the_rest(env):
    write(env.path(CONF), "# ours\n[slabvol]\ncache_scope = node\n")
    os.chmod(env.path(CONF), 0o640)
    assert env.run("--skip-vg", "--nfd") == 0, env.err
    config = config_mod.load(env.path(CONF))
    assert (config.cache_scope, config.nfd_features_file) == ("node", NFD_FILE)
    text = read(env.path(CONF))
    assert text.startswith("# ours\n[slabvol]\n") and text.count("nfd_features_file =") == 1
    assert stat.S_IMODE(os.stat(env.path(CONF)).st_mode) == 0o640
    assert f"changed: set nfd_features_file = {NFD_FILE} in {CONF}" in env.out
    before = snapshot(env.root)
    assert env.run("--skip-vg", "--nfd") == 0, env.err  # idempotent
    assert snapshot(env.root) == before
    assert "Nothing changed" in env.out


def test_nfd_uncomments_the_line_of_a_config_install_sh_wrote_earlier(env):
    assert env.run("--skip-vg") == 0, env.err
    old = read(env.path(CONF))
    assert nfd_setting(env) == ""
    assert env.run("--skip-vg", "--nfd") == 0, env.err
    new = read(env.path(CONF))
    assert nfd_setting(env) == NFD_FILE
    assert "# nfd_features_file =" not in new
    changed = [line for line in new.splitlines() if line not in old.splitlines()]
    assert changed == [f"nfd_features_file = {NFD_FILE}"]  # the help comment above stays


def test_nfd_adds_the_section_to_a_config_without_one(env):
    write(env.path(CONF), "# nothing set yet\n")
    assert env.run("--skip-vg", "--nfd") == 0, env.err
    assert nfd_setting(env) == NFD_FILE
    assert read(env.path(CONF)).startswith("# nothing set yet\n")


@pytest.mark.parametrize("line", ["nfd_features_file = /srv/nfd/slabvol",
                                  "nfd_features_file =", "NFD_Features_File: /x/y"])
def test_nfd_refuses_to_override_a_setting_in_the_config_and_changes_nothing(env, line):
    write(env.path(CONF), f"[slabvol]\ncache_scope = node\n{line}\n")
    before = snapshot(env.root)
    assert env.run("--skip-vg", "--nfd") == 1
    assert f"{CONF} line 3 already sets" in env.err
    assert f"nfd_features_file = {NFD_FILE}" in env.err and "drop --nfd" in env.err
    assert "Nothing was changed" in env.err
    assert snapshot(env.root) == before
    assert env.node.changing_calls() == []


def test_nfd_does_not_edit_a_config_that_is_a_symlink(env):
    write(env.path("/srv/conf/slabvol.conf"), "[slabvol]\n")
    os.makedirs(env.path("/etc/slabvol"))
    os.symlink(env.path("/srv/conf/slabvol.conf"), env.path(CONF))
    before = snapshot(env.root)
    assert env.run("--skip-vg", "--nfd") == 1
    assert "is a symlink" in env.err and f"nfd_features_file = {NFD_FILE}" in env.err
    assert snapshot(env.root) == before


def test_nfd_dry_run_changes_nothing(env):
    write(env.path(CONF), "[slabvol]\n")
    before = snapshot(env.root)
    assert env.run("--skip-vg", "--nfd", "--dry-run") == 0, env.err
    assert snapshot(env.root) == before
    assert f"would: set nfd_features_file = {NFD_FILE} in {CONF}" in env.out
    assert f"would: created directory {os.path.dirname(NFD_FILE)}" in env.out


def test_a_feature_dir_set_in_the_config_is_created_without_nfd_too(env):
    write(env.path(CONF), f"[slabvol]\nnfd_features_file = {NFD_FILE}\n")
    assert env.run("--skip-vg") == 0, env.err
    assert os.path.isdir(env.path(os.path.dirname(NFD_FILE)))


def test_a_feature_dir_nfd_worker_cannot_read_is_warned_about(env):
    os.makedirs(env.path(os.path.dirname(NFD_FILE)))
    os.chmod(env.path(os.path.dirname(NFD_FILE)), 0o700)
    assert env.run("--skip-vg", "--nfd") == 0, env.err
    assert f"chmod 755 {os.path.dirname(NFD_FILE)}" in env.err
    assert stat.S_IMODE(os.stat(env.path(os.path.dirname(NFD_FILE))).st_mode) == 0o700


def test_nfd_publishes_the_labels_once_so_that_pods_requiring_room_can_come(env):
    # The driver publishes after each mount, unmount and gc; a new node has had none, and a
    # pod with `vol_plugin affinity --require-room` never goes to a node without the labels.
    env.node.make_vg("/dev/xvdz")
    assert env.run("--nfd") == 0, env.err
    assert env.node.gc_runs == [env.path(DEFAULT_EXE)]
    assert env.node.gc_flags == [["-S"]]  # run as its #! line runs it
    assert f"changed: published this node's labels to {NFD_FILE} (vol_plugin gc)" in env.out
    write(env.path(NFD_FILE), "slabvol.io/room-mib=8192\n")  # what the driver wrote
    assert env.run("--nfd") == 0, env.err
    assert env.node.gc_runs == [env.path(DEFAULT_EXE)]  # once: the driver keeps it current
    assert "Nothing changed" in env.out


def test_a_failed_first_publication_only_warns(env):
    env.node.make_vg("/dev/xvdz")
    env.node.gc_answer = (1, "", "vol_plugin: lock busy\n")
    assert env.run("--nfd") == 0, env.err
    assert "warning: `vol_plugin gc` did not publish this node's labels" in env.err
    assert "lock busy" in env.err


@pytest.mark.parametrize("args", [["--skip-vg", "--nfd"], ["--nfd", "--dry-run"], []])
def test_no_publication_without_a_volume_group_a_change_or_nfd(env, args):
    env.node.make_vg("/dev/xvdz")
    assert env.run(*args) == 0, env.err
    assert env.node.gc_runs == []


@pytest.mark.parametrize("args", [["--uninstall"], ["--uninstall", "--purge"]])
def test_uninstall_removes_the_feature_file_so_the_node_stops_advertising(env, args):
    assert env.run("--skip-vg", "--nfd") == 0, env.err
    write(env.path(NFD_FILE), "slabvol.io/room-mib=1024\n")
    assert env.run(*args) == 0, env.err
    assert not os.path.exists(env.path(NFD_FILE))
    assert f"removed the NFD feature file {NFD_FILE}" in env.out
    assert os.path.isdir(env.path(os.path.dirname(NFD_FILE)))  # NFD's dir, not ours


# -- install.sh itself ---------------------------------------------------------------------------

STUB_TOOLS = LVM_TOOLS + ("mkfs.ext4", "mkfs.xfs", "mount", "umount", "flock")


@pytest.fixture
def stub_path(tmp_path):
    """A PATH dir where the node tools exist as stubs (LVM ones say: no such VG)."""
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for tool in STUB_TOOLS:
        script = stubs / tool
        script.write_text('#!/bin/sh\necho "  Volume group \\"slabvol\\" not found" >&2\n'
                          'exit 5\n')
        script.chmod(0o755)
    return str(stubs)


def run_install_sh(args, stub_path, **env_extra):
    env = dict(os.environ, PATH=stub_path + os.pathsep + os.environ.get("PATH", ""),
               PYTHONPATH=os.path.join(REPO, "src"), **env_extra)
    env.pop("SLABVOL_ROOT", None)
    return subprocess.run(["bash", os.path.join(REPO, "install.sh"), *args], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120)


def test_install_sh_installs_runs_again_unchanged_and_uninstalls(tmp_path, stub_path):
    root = tmp_path / "node"
    root.mkdir()
    args = ["--root", str(root), "--python", sys.executable, "--plugin-dir", "/plugins",
            "--skip-vg"]
    first = run_install_sh(args, stub_path)
    assert first.returncode == 0, first.stderr
    exe = root / "plugins" / "ax~vol_plugin" / "vol_plugin"
    assert exe.read_text().startswith(f"#!{sys.executable}\n")
    assert stat.S_IMODE(exe.stat().st_mode) == 0o755
    assert (root / "etc/slabvol/slabvol.conf").exists()
    assert os.readlink(root / "usr/local/sbin/vol_plugin") == "/plugins/ax~vol_plugin/vol_plugin"
    # the installed driver works (its interpreter finds slabvol through PYTHONPATH here)
    init = subprocess.run([str(exe), "init"], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=os.path.join(REPO, "src")))
    assert json.loads(init.stdout)["status"] == "Success"
    assert init.stderr == ""

    second = run_install_sh(args, stub_path)
    assert second.returncode == 0, second.stderr
    assert "Nothing changed" in second.stdout

    gone = run_install_sh(["--root", str(root), "--uninstall", "--plugin-dir", "/plugins"],
                          stub_path)
    assert gone.returncode == 0, gone.stderr
    assert not exe.exists()
    assert (root / "etc/slabvol/slabvol.conf").exists()


def test_install_sh_refuses_a_python_that_is_too_old(tmp_path, stub_path):
    old = tmp_path / "python3.6"
    old.write_text('#!/bin/sh\n[ "$1" = "--version" ] && echo "Python 3.6.8" && exit 0\nexit 1\n')
    old.chmod(0o755)
    result = run_install_sh(["--python", str(old), "--skip-vg"], stub_path)
    assert result.returncode == 1
    assert "Python 3.6.8; 3.9 or newer is needed" in result.stderr
    assert "apt-get install -y python3 python3-venv" in result.stderr


def test_install_sh_passes_bad_arguments_on_and_exits_2(tmp_path, stub_path):
    result = run_install_sh(["--root", str(tmp_path), "--purge"], stub_path)
    assert result.returncode == 2
    assert "install.sh: error: --purge" in result.stderr


def test_install_sh_help(stub_path):
    result = run_install_sh(["--help"], stub_path)
    assert result.returncode == 0
    assert "--loopback" in result.stdout and "/home/kubernetes/flexvolume" in result.stdout


def test_the_operations_doc_lists_every_config_key_and_install_option():
    doc = read(os.path.join(REPO, "docs", "operations.md"))
    for key in CONFIG_HELP:
        default = getattr(config_mod.Config(), key)
        default = f"{default:g}" if isinstance(default, float) else str(default)
        assert f"| `{key}` | `{default}` |" in doc or (default == "" and f"| `{key}` |" in doc)
    for option in ("--disk", "--loopback", "--size", "--force", "--prefix", "--python",
                   "--wheelhouse", "--plugin-dir", "--uninstall", "--purge", "--dry-run",
                   "--skip-vg", "--nfd"):
        assert option in doc
