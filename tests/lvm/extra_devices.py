"""Unrelated block devices on the node, for the scan test (test_scan.py) and bench/run:
COUNT loop devices on small sparse files in a disk-backed directory (not the VM's RAM-disk
/tmp), carrying the PVs of a few unrelated VGs (10 PVs each: one vgcreate per VG keeps the
set-up quick). Needs root and LVM.

    from extra_devices import ExtraDevices           # tests/lvm on sys.path
    with ExtraDevices(count=40) as extra:            # directory: $SLABVOL_OUT or /var/tmp
        before = extra.reads()                       # {"/dev/loop7": reads completed, ...}
        ...                                          # run slabvol
        assert extra.reads() == before               # nothing read any of them

From a shell (bench/run): `python3 tests/lvm/extra_devices.py up DIR [COUNT]` prints the
devices, `python3 tests/lvm/extra_devices.py down DIR` removes them again.

reads() is the kernel's count of completed reads (/sys/block/loopN/stat, field 1). LVM
reads labels with O_DIRECT, so every scan of a device counts, whatever the page cache.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

PER_VG = 10
SIZE = "8M"  # a PV's metadata area and one 4 MiB extent
ENV = dict(os.environ, LC_ALL="C", LVM_SUPPRESS_FD_WARNINGS="1")


def _sh(*argv, check=True):
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, env=ENV)
    if check and proc.returncode:
        raise RuntimeError(f"{argv} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
    return proc


def default_directory():
    return os.environ.get("SLABVOL_OUT") or "/var/tmp"


def reads(device):
    with open(f"/sys/block/{os.path.basename(device)}/stat") as handle:
        return int(handle.read().split()[0])


class ExtraDevices:
    def __init__(self, count=40, directory=None, prefix="slabvol_extra"):
        self.count = count
        self.parent = directory or default_directory()
        self.prefix = prefix
        self.root = None
        self.devices = []
        self.vgs = []

    def __enter__(self):
        os.makedirs(self.parent, exist_ok=True)
        self.root = tempfile.mkdtemp(prefix="extra-devices-", dir=self.parent)
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc):
        self.down()

    def up(self):
        for index in range(self.count):
            image = os.path.join(self.root, f"pv{index:02d}.img")
            _sh("truncate", "-s", SIZE, image)
            self.devices.append(_sh("losetup", "--find", "--show", image).stdout.strip())
        for start in range(0, self.count, PER_VG):
            vg = f"{self.prefix}_{start // PER_VG:02d}"
            _sh("vgcreate", "-q", "-y", vg, *self.devices[start:start + PER_VG])
            self.vgs.append(vg)
        _sh("udevadm", "settle", "--timeout=30", check=False)  # udev's own probes done
        with open(os.path.join(self.root, "devices.json"), "w") as handle:
            json.dump({"devices": self.devices, "vgs": self.vgs}, handle)

    def down(self):
        if self.vgs:
            _sh("vgremove", "-q", "-y", *self.vgs, check=False)
        _sh("udevadm", "settle", "--timeout=30", check=False)
        for device in self.devices:
            _sh("losetup", "--detach", device, check=False)
        self.devices, self.vgs = [], []
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)

    def reads(self):
        return {device: reads(device) for device in self.devices}


def main(argv):
    if len(argv) >= 2 and argv[0] == "up":
        extra = ExtraDevices(int(argv[2]) if len(argv) > 2 else 40, argv[1])
        extra.__enter__()
        print(" ".join(extra.devices))
        print(f"state: {extra.root}/devices.json", file=sys.stderr)
        return 0
    if len(argv) == 2 and argv[0] == "down":
        for entry in sorted(os.listdir(argv[1])):
            state = os.path.join(argv[1], entry, "devices.json")
            if entry.startswith("extra-devices-") and os.path.exists(state):
                with open(state) as handle:
                    saved = json.load(handle)
                extra = ExtraDevices(len(saved["devices"]), argv[1])
                extra.root = os.path.dirname(state)
                extra.devices, extra.vgs = saved["devices"], saved["vgs"]
                extra.down()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
