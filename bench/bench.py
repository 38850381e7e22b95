"""Measure slabvol on real LVM, through the kubelet's calling convention (a new process per
call of the installed driver), in one run:

1. overhead: wall time of a hit mount, a miss mount and an unmount against their floor
   (the exact commands the driver ran, taken from a trace of its calls, run bare, plus
   the bare start of the driver's interpreter), and where the time goes (phases);
2. archive: files added to /etc/lvm/archive per miss cycle and per hit cycle, and the
   VG's archive after a long history;
3. devices: a hit mount with COUNT unrelated loop devices carrying their own PVs and VGs;
4. scale: a hit mount with 1, 50, 200 slabs in the VG (tagged 4 MiB LVs in the driver's
   own tag format, of another size class, never handed out);
5. cold vs warm dind: how long a pod waits for a usable image (the original bench).

Runs as root on a node with device-mapper (bench/run boots a VM where needed). Medians
over --repeat runs; under the VM's software emulation absolute numbers are several times
a real node's, the ratios are what to read. Writes out/bench.json (bench/report.py, run
by bench/run on the host, prints the table and writes the plot).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "lvm"))
sys.path.insert(0, HERE)

import report  # noqa: E402
from kubelet import Kubelet, Pod  # noqa: E402
from slabvol import slab as S  # noqa: E402
from test_dind import Dockerd  # noqa: E402

VG = "slabvol_bench"
SLAB_MB = "512"
ENV = dict(os.environ, LC_ALL="C", LANG="C", LVM_SUPPRESS_FD_WARNINGS="1")
TRACE_DIR = os.path.join(HERE, "trace")
ARCHIVE_DIR = "/etc/lvm/archive"
QUIET = ("--config", "backup { archive = 0 }")  # the bench's own set-up archives nothing


def sh(*argv, input=None):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL,
                          universal_newlines=True, env=ENV)
    if proc.returncode:
        raise RuntimeError(f"{argv} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
    return proc.stdout.strip()


def timed(fn):
    start = time.monotonic()
    value = fn()
    return time.monotonic() - start, value


def say(text):
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def image_tarball(path, payload_mb):
    """A root filesystem with busybox and payload_mb of incompressible data: the stand-in
    for a base image that a cold cache must load again."""
    root = tempfile.mkdtemp()
    os.makedirs(os.path.join(root, "bin"))
    sh("cp", sh("sh", "-c", "command -v busybox"), os.path.join(root, "bin", "busybox"))
    with open(os.path.join(root, "payload"), "wb") as handle:
        handle.write(os.urandom(payload_mb * 1024 * 1024))
    sh("tar", "-C", root, "-cf", path, ".")


def archives(vg):
    if not os.path.isdir(ARCHIVE_DIR):
        return set()
    return {f for f in os.listdir(ARCHIVE_DIR) if f.startswith(vg + "_") and f.endswith(".vg")}


def lv_tags(vg, lv):
    return set(t for t in sh("lvs", "--noheadings", "-o", "lv_tags", f"{vg}/{lv}").split(",")
               if t)


def set_tags(vg, lv, wanted):
    """Put an LV's tags back to ``wanted`` (after a floor replay changed them)."""
    now = lv_tags(vg, lv)
    argv = ["lvchange", *QUIET]
    for tag in sorted(now - wanted):
        argv += ["--deltag", tag]
    for tag in sorted(wanted - now):
        argv += ["--addtag", tag]
    if len(argv) > 1 + len(QUIET):
        sh(*argv, f"{vg}/{lv}")


class TimedKubelet(Kubelet):
    """The kubelet stand-in, remembering the wall-clock times around its last call."""

    last = (0.0, 0.0)

    def call(self, *args, env=None, timeout=300):
        start = time.time()
        try:
            return super().call(*args, env=env, timeout=timeout)
        finally:
            self.last = (start, time.time())

    @property
    def seconds(self):
        return self.last[1] - self.last[0]


def install(plugin):
    """The driver as install.sh lays it out (its own renderer: ``#!<venv python> -S``), with
    this venv's interpreter; the #! line is returned."""
    try:
        from slabvol.install.runtime import Runtime, render_executable

        content = render_executable(REPO, Runtime(python=sys.executable, venv=sys.prefix))
    except ImportError:  # an older tree: the tier's layout (tests/lvm/conftest.py)
        with open(os.path.join(REPO, "vol_plugin")) as src:
            content = f"#!{sys.executable}\n" + src.read().split("\n", 1)[1]
    os.makedirs(os.path.dirname(plugin), exist_ok=True)
    with open(plugin, "w") as dst:
        dst.write(content)
    os.chmod(plugin, 0o755)
    return content.split("\n", 1)[0]


def install_traced(plugin, traced):
    """A wrapper with the driver's own #! line that starts the bench's trace hook and then
    runs the driver in the same process: the hook cannot rely on site (``-S``)."""
    with open(plugin) as handle:
        shebang = handle.readline().rstrip("\n")
    with open(traced, "w") as dst:
        dst.write(f"{shebang}\nimport sys\nsys.path.insert(0, {TRACE_DIR!r})\n"
                  f"import sitecustomize  # noqa: the bench's trace hook\n"
                  f"del sys.path[0]\nsys.argv[0] = {plugin!r}\n"
                  f"with open({plugin!r}) as _f:\n"
                  f"    _code = compile(_f.read(), {plugin!r}, 'exec')\n"
                  f"exec(_code, {{'__name__': '__main__', '__file__': {plugin!r}}})\n")
    os.chmod(traced, 0o755)


def interpreter_argv(plugin):
    """``<the driver's interpreter and its flags> -c pass``, from its #! line."""
    with open(plugin) as handle:
        line = handle.readline()
    return [*line[2:].split(), "-c", "pass"]


def run_bare(argvs):
    """Run commands one after the other as the driver would (its environment, no shell);
    their total wall time."""
    total = 0.0
    for argv in argvs:
        start = time.monotonic()
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, env=ENV)
        total += time.monotonic() - start
        if proc.returncode:
            raise RuntimeError(f"floor: {argv} failed ({proc.returncode}): {proc.stderr}")
    return total


def mount_dirs(argvs):
    return [argv[-1] for argv in argvs if os.path.basename(argv[0]) in ("mount", "umount")]


# -- unrelated block devices -----------------------------------------------------------------

class OwnExtraDevices:
    """COUNT loop devices on sparse files in a disk-backed directory, each the PV of its
    own VG (created with --devices, so that each vgcreate scans only its device)."""

    def __init__(self, count, directory):
        self.count, self.parent = count, directory
        self.root, self.devices, self.vgs = None, [], []

    def __enter__(self):
        self.root = tempfile.mkdtemp(prefix="extra-devices-", dir=self.parent)
        try:
            for i in range(self.count):
                image = os.path.join(self.root, f"pv{i:02d}.img")
                sh("truncate", "-s", "8M", image)
                self.devices.append(sh("losetup", "--find", "--show", image))
            self.vgs = [f"bench_extra_{i:02d}" for i in range(self.count)]
            sh("lvm", input="".join(
                f"vgcreate -q --devices {d} --config 'backup {{ backup = 0 archive = 0 }}' "
                f"{vg} {d}\n" for d, vg in zip(self.devices, self.vgs)))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        if self.vgs:
            subprocess.run(["lvm"], input="".join(
                f"vgremove -q -f --devices {d} --config 'backup {{ backup = 0 archive = 0 }}' "
                f"{vg}\n" for d, vg in zip(self.devices, self.vgs)),
                universal_newlines=True, env=ENV, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, check=False)
        for device in self.devices:
            subprocess.run(["losetup", "-d", device], check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        self.devices, self.vgs = [], []

    def reads(self):
        out = {}
        for device in self.devices:
            with open(f"/sys/block/{os.path.basename(device)}/stat") as handle:
                out[device] = int(handle.read().split()[0])
        return out


def extra_devices(count, directory):
    """The scan test's helper (tests/lvm/extra_devices.py) when it is there, else ours."""
    try:
        from extra_devices import ExtraDevices
        return "tests/lvm/extra_devices.py", ExtraDevices(count=count, directory=directory)
    except ImportError:
        return "bench/bench.py", OwnExtraDevices(count, directory)


# -- many slabs, quickly ---------------------------------------------------------------------

FILLER = "fill_"


def filler_tags():
    return S.new_tags(state=S.FREE, size_mb=4, fs_type="ext4", type=S.GRAPH,
                      namespace="bench-filler", last_used=int(time.time()) - 86400,
                      use_count=1)


def add_fillers(vg, total, work):
    """Make the VG hold ``total`` filler LVs (4 MiB, free slabs of another size class, no
    filesystem: never handed out). One lvcreate for the first; the rest are copies of it
    written into the VG's metadata with one vgcfgrestore (a few seconds, where one
    lvcreate per LV takes minutes under emulation); then the VG is activated."""
    lvs = sh("lvs", "--noheadings", "-o", "lv_name", vg).split()
    have = sorted(n for n in lvs if n.startswith(FILLER))
    if len(have) >= total:
        return
    template = f"{FILLER}0000"
    if template not in have:
        argv = ["lvcreate", *QUIET, "-q", "-y", "-an", "-Zn", "-Wn", "-l", "1", "-n", template]
        for tag in filler_tags():
            argv += ["--addtag", tag]
        sh(*argv, vg)
        have.append(template)
    if len(have) < total:
        sh("vgchange", "-q", "-an", vg)
        meta = os.path.join(work, "fill.vg")
        sh("vgcfgbackup", "-q", "-f", meta, vg)
        with open(meta) as handle:
            text = handle.read()
        names = [f"{FILLER}{i:04d}" for i in range(len(have), total)]
        text = report.clone_lvs(text, template, names)
        with open(meta, "w") as handle:
            handle.write(text)
        # vgchange -an can leave LVs active in the VM; only LVs are added, so go ahead
        sh("vgcfgrestore", "--yes", "-q", "-f", meta, vg, input="y\n")
    sh("vgchange", "-q", "-ay", vg)


def remove_fillers(vg):
    names = [n for n in sh("lvs", "--noheadings", "-o", "lv_name", vg).split()
             if n.startswith(FILLER)]
    if names:
        sh("lvremove", *QUIET, "-q", "-y", *[f"{vg}/{n}" for n in names])


# -- the measurements ------------------------------------------------------------------------

class Bench:
    def __init__(self, args, work, disk):
        self.args, self.work, self.disk = args, work, disk
        self.plugin = os.path.join(work, "plugins", "ax~vol_plugin", "vol_plugin")
        self.log_file = os.path.join(work, "slabvol.log")
        config = os.path.join(work, "slabvol.conf")
        with open(config, "w") as handle:
            handle.write(f"[slabvol]\nvolume_group = {VG}\nkubelet_dir = {work}/kubelet\n"
                         f"log_file = {self.log_file}\nlock_file = {work}/lock\n")
        os.makedirs(os.path.join(work, "kubelet", "pods"))
        self.shebang = install(self.plugin)
        traced = os.path.join(work, "vol_plugin.traced")
        install_traced(self.plugin, traced)
        env = dict(ENV, SLABVOL_CONFIG=config)
        self.kubelet = TimedKubelet(self.plugin, f"{work}/kubelet", env)
        self.tracing = TimedKubelet(traced, f"{work}/kubelet", env)
        self.interp = interpreter_argv(self.plugin)
        self.result = {}
        self.warm = None  # the warm slab every hit reuses
        self.traces = {"hit": [], "miss": [], "unmount": []}
        self.floor_cmds = {}

    # the driver, through the kubelet's convention

    def hit(self, namespace="bench", env=None):
        pod = Pod(namespace=namespace)
        call = self.kubelet.mount(pod, size_mb=SLAB_MB, env=env)
        assert call.status == "Success" and "reused" in call.message, call.output
        assert self.warm in call.message, f"handed out another slab: {call.output}"
        return pod, self.kubelet.seconds

    def miss(self, namespace, env=None):
        pod = Pod(namespace=namespace)
        call = self.kubelet.mount(pod, size_mb=SLAB_MB, env=env)
        assert call.status == "Success" and "created slab" in call.message, call.output
        return pod, self.kubelet.seconds, call.message.split()[-1]

    def unmount(self, pod, env=None):
        call = self.kubelet.unmount(pod, env=env)
        assert call.status == "Success", call.output
        return self.kubelet.seconds

    def traced(self, fn, *args):
        """fn(*args) through the traced wrapper; (its result, the trace's events, the
        caller's times around the call)."""
        path = os.path.join(self.work, f"trace-{uuid.uuid4().hex}.jsonl")
        plain, self.kubelet = self.kubelet, self.tracing
        try:
            value = fn(*args, env={"SLABVOL_BENCH_TRACE": path})
        finally:
            self.kubelet = plain
        spawned, ended = self.tracing.last
        events = []
        if os.path.exists(path):
            with open(path) as handle:
                events = report.parse_trace(handle.read())
        return value, events, spawned, ended

    def interpreter(self):
        return timed(lambda: sh(*self.interp))[0]

    # phases

    def trace_runs(self):
        """Traced hit, unmount and miss calls: the phases, and the commands for the floor."""
        for _ in range(self.args.trace_runs):
            (pod, _), events, t0, t1 = self.traced(self.hit)
            self._keep("hit", events, t0, t1)
            _, events, t0, t1 = self.traced(self.unmount, pod)
            self._keep("unmount", events, t0, t1)
            namespace = f"trace-{uuid.uuid4().hex[:8]}"
            (pod, _, name), events, t0, t1 = self.traced(self.miss, namespace)
            self._keep("miss", events, t0, t1, lv=name)
            self.unmount(pod)
            sh("lvremove", *QUIET, "-q", "-y", f"{VG}/{name}")

    def _keep(self, op, events, spawned, ended, lv=None):
        if not events:
            self.result.setdefault("notes", []).append(
                f"{op}: no trace (bench/trace did not load)")
            return
        self.traces[op].append(report.phases(events, spawned, ended))
        if op not in self.floor_cmds:
            self.floor_cmds[op] = (report.floor_argvs(events), lv)

    # floors

    def floor_hit_cycle(self):
        """Replay the traced hit and unmount commands bare on the warm slab; (hit seconds,
        unmount seconds) without the interpreter. The slab's tags are put back after."""
        hit_cmds, unmount_cmds = self.floor_cmds["hit"][0], self.floor_cmds["unmount"][0]
        before = lv_tags(VG, self.warm)
        for d in mount_dirs(hit_cmds):
            os.makedirs(d, exist_ok=True)
        try:
            hit = run_bare(hit_cmds)
            unmount = run_bare(unmount_cmds)
        finally:
            for d in mount_dirs(hit_cmds):
                subprocess.run(["umount", d], stderr=subprocess.DEVNULL, check=False)
            set_tags(VG, self.warm, before)
        for d in mount_dirs(hit_cmds):
            os.rmdir(d)
        return hit, unmount

    def floor_miss(self):
        cmds, lv = self.floor_cmds["miss"]
        name = f"floor_{uuid.uuid4().hex[:8]}"
        cmds = report.rename(cmds, lv, name)
        for d in mount_dirs(cmds):
            os.makedirs(d, exist_ok=True)
        try:
            return run_bare(cmds)
        finally:
            for d in mount_dirs(cmds):
                subprocess.run(["umount", d], stderr=subprocess.DEVNULL, check=False)
                os.rmdir(d)
            subprocess.run(["lvremove", *QUIET, "-q", "-y", f"{VG}/{name}"], env=ENV,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)

    # the phases of the run

    def overhead(self):
        """Driver and floor interleaved, --repeat times; archive files per cycle."""
        n = self.args.repeat
        wall = {"hit": [], "miss": [], "unmount": []}
        floor = {"hit": [], "miss": [], "unmount": []}
        interp = []
        per_hit, per_miss = [], []
        for i in range(n):
            before = archives(VG)
            pod, seconds = self.hit()
            wall["hit"].append(seconds)
            wall["unmount"].append(self.unmount(pod))
            per_hit.append(len(archives(VG) - before))

            before = archives(VG)
            pod, seconds, name = self.miss(f"miss-{i}")
            wall["miss"].append(seconds)
            self.unmount(pod)
            per_miss.append(len(archives(VG) - before))
            sh("lvremove", *QUIET, "-q", "-y", f"{VG}/{name}")

            hit, unmount = self.floor_hit_cycle()
            miss = self.floor_miss()
            for op, cmds in (("hit", hit), ("unmount", unmount), ("miss", miss)):
                start = self.interpreter()
                interp.append(start)
                floor[op].append(start + cmds)
            say(f"overhead {i + 1}/{n}: hit {wall['hit'][-1]:.2f} s (floor "
                f"{floor['hit'][-1]:.2f}), miss {wall['miss'][-1]:.2f} ({floor['miss'][-1]:.2f}), "
                f"unmount {wall['unmount'][-1]:.2f} ({floor['unmount'][-1]:.2f})")
        out = {}
        for op in ("hit", "miss", "unmount"):
            out[op] = {"wall_s": report.median(wall[op]), "runs": _r(wall[op]),
                       "floor_s": report.median(floor[op]), "floor_runs": _r(floor[op]),
                       "floor_commands": [" ".join(a) for a in self.floor_cmds[op][0]],
                       "phases": {k: round(v, 4) for k, v in
                                  report.median_phases(self.traces[op]).items()},
                       "traced_runs": len(self.traces[op])}
        out["interpreter"] = {"argv": self.interp, "median_s": report.median(interp),
                              "runs": _r(interp)}
        self.result["overhead"] = out
        self.result["archive"] = {"per_hit_cycle": per_hit, "per_miss_cycle": per_miss}

    def hits(self, n, label, reads=None):
        """n hit cycles and n floor hit cycles, interleaved: the medians. With ``reads`` (a
        device -> read count probe): also how many of those devices the driver's own hit
        and unmount calls read (the floor's cycle restores tags with a plain lvchange,
        which scans every device, so it is left out of that count)."""
        wall, floor, unmount = [], [], []
        touched = set()
        for _ in range(n):
            before = reads() if reads else {}
            pod, seconds = self.hit()
            wall.append(seconds)
            unmount.append(self.unmount(pod))
            if reads:
                touched.update(d for d, r in reads().items() if r != before[d])
            floor.append(self.floor_hit_cycle()[0] + self.interpreter())
        say(f"{label}: hit {report.median(wall):.2f} s, floor {report.median(floor):.2f} s")
        return {"wall_s": report.median(wall), "runs": _r(wall),
                "floor_s": report.median(floor), "floor_runs": _r(floor),
                "unmount_s": report.median(unmount), "devices_read": len(touched)}

    def devices(self):
        count = self.args.devices
        baseline = self.hits(self.args.repeat, "devices: baseline")
        helper, extra = extra_devices(count, self.disk)
        start = time.monotonic()
        with extra:
            setup = time.monotonic() - start
            say(f"devices: {count} loop devices with their own PVs/VGs up in {setup:.0f} s "
                f"({helper})")
            with_devices = self.hits(self.args.repeat, f"devices: +{count}", extra.reads)
        self.result["devices"] = {
            "count": count, "helper": helper, "setup_s": round(setup, 1),
            "wall_s": with_devices["wall_s"], "runs": with_devices["runs"],
            "floor_s": with_devices["floor_s"], "floor_runs": with_devices["floor_runs"],
            "baseline_wall_s": baseline["wall_s"], "baseline_runs": baseline["runs"],
            "baseline_floor_s": baseline["floor_s"],
            "devices_read_by_the_driver": with_devices["devices_read"]}

    def scale(self):
        points = []
        for slabs in self.args.slabs:
            start = time.monotonic()
            add_fillers(VG, slabs - 1, self.work)
            setup = time.monotonic() - start
            lvs = [n for n in sh("lvs", "--noheadings", "-o", "lv_name", VG).split()]
            assert len(lvs) == slabs, f"{len(lvs)} LVs in {VG}, wanted {slabs}"
            row = self.hits(self.args.repeat, f"scale: {slabs} slabs (set up in {setup:.0f} s)")
            points.append(dict(row, slabs=slabs, setup_s=round(setup, 1)))
        rows = [line.split() for line in
                sh("lvs", "--noheadings", "-o", "lv_name,lv_tags", VG).splitlines()]
        untouched = all(len(r) == 2 and "slabvol.state=free" in r[1].split(",")
                        for r in rows if r and r[0].startswith(FILLER))
        remove_fillers(VG)
        self.result["scale"] = {"points": points, "fillers_never_handed_out": untouched}

    def bounded(self):
        """A node's long history: 3 x the kept number of archive files of this VG (copies
        of a real one), then one more slab created and removed by the driver."""
        from slabvol.lvm import ARCHIVES_KEPT

        newest = max(archives(VG))
        with open(os.path.join(ARCHIVE_DIR, newest)) as handle:
            text = handle.read()
        seeded = 3 * ARCHIVES_KEPT
        for index in range(seeded):
            with open(os.path.join(ARCHIVE_DIR, f"{VG}_{index:05d}-1.vg"), "w") as handle:
                handle.write(text)
        pod = Pod(namespace="bounded")
        call = self.kubelet.mount(pod, size_mb="64", ax_vol_type="ax-anonymous")
        assert call.status == "Success", call.output
        self.unmount(pod)  # anonymous: removed on unmount
        self.result["archive"]["bounded"] = {"seeded": seeded, "after": len(archives(VG)),
                                             "kept": ARCHIVES_KEPT}

    def dind(self, tarball):
        results = {"cold_pod_ready": [], "warm_pod_ready": []}
        for i in range(self.args.dind_repeat):
            ns = f"dind-{i}"
            for key, pod in (("cold_pod_ready", Pod(namespace=ns)),
                             ("warm_pod_ready", Pod(namespace=ns))):
                start = time.monotonic()
                assert self.kubelet.mount(pod, size_mb="1024").status == "Success"
                scratch = tempfile.mkdtemp(dir=self.work)
                with Dockerd(self.kubelet.volume_dir(pod), scratch) as dockerd:
                    if "bench:1" not in dockerd.docker("images", "--format",
                                                       "{{.Repository}}:{{.Tag}}"):
                        dockerd.docker("import", tarball, "bench:1")
                    results[key].append(time.monotonic() - start)
                self.kubelet.unmount(pod)
            say(f"dind {i + 1}/{self.args.dind_repeat}: cold {results['cold_pod_ready'][-1]:.1f} s,"
                f" warm {results['warm_pod_ready'][-1]:.1f} s")
        return results


def _r(values):
    return [round(v, 3) for v in values]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 repeats, 1 traced run, slabs 1 and 20, 10 devices, no dind")
    parser.add_argument("--repeat", type=int, default=None, help="repeats per median (5)")
    parser.add_argument("--trace-runs", type=int, default=None, help="traced calls per op (3)")
    parser.add_argument("--slabs", default=None, help="scale series (1,50,200)")
    parser.add_argument("--devices", type=int, default=None, help="unrelated devices (40)")
    parser.add_argument("--dind-repeat", type=int, default=None, help="cold/warm dind pods (2)")
    parser.add_argument("--payload-mb", type=int, default=64)
    args = parser.parse_args()
    quick = args.quick
    defaults = dict(repeat=(2, 5), trace_runs=(1, 3), slabs=("1,20", "1,50,200"),
                    devices=(10, 40), dind_repeat=(0, 2))
    for key, (q, full) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, q if quick else full)
    args.slabs = [int(x) for x in str(args.slabs).split(",")]
    out_dir = os.environ.get("SLABVOL_OUT", os.path.join(REPO, "out"))
    # small files (config, log, lock, kubelet dir, dockerd's sockets) in /tmp; the loop
    # devices' backing files on a disk (out/), not in the VM's small RAM disk
    work = tempfile.mkdtemp(prefix="slabvol-bench-")
    disk = tempfile.mkdtemp(prefix="bench-disk-", dir=out_dir)
    with open("/proc/loadavg") as handle:
        load_start = handle.read().strip()
    started = time.monotonic()
    sh("truncate", "-s", "6G", f"{disk}/pv.img")
    loop = sh("losetup", "--find", "--show", f"{disk}/pv.img")
    sh("pvcreate", "-q", loop)
    sh("vgcreate", "-q", VG, loop)
    bench = Bench(args, work, disk)
    kubelet = bench.kubelet
    legacy = {k: [] for k in ("init", "mount_miss", "mount_hit", "unmount")}
    durations = {}
    dind = {}
    try:
        say(f"VG {VG} on {loop} ({disk}); driver {bench.plugin} ({bench.shebang})")
        for _ in range(args.repeat):
            legacy["init"].append(timed(kubelet.init)[0])
        pod, _, bench.warm = bench.miss("bench")  # the warm slab
        bench.unmount(pod)
        phase = time.monotonic()
        bench.trace_runs()
        durations["trace"] = time.monotonic() - phase
        for phase_name, fn in (("overhead", bench.overhead), ("devices", bench.devices),
                               ("scale", bench.scale), ("bounded", bench.bounded)):
            if phase_name == "devices" and not args.devices:
                continue
            phase = time.monotonic()
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - keep what the other phases measured
                say(f"{phase_name} failed: {exc!r}")
                bench.result.setdefault("errors", {})[phase_name] = repr(exc)
            durations[phase_name] = time.monotonic() - phase
        if args.dind_repeat:
            tarball = f"{work}/image.tar"
            image_tarball(tarball, args.payload_mb)
            phase = time.monotonic()
            dind = bench.dind(tarball)
            durations["dind"] = time.monotonic() - phase
    finally:
        subprocess.run(["sh", "-c", f"grep -o ' {work}/[^ ]*' /proc/self/mounts | "
                        "xargs -r -n1 umount -l"], check=False)
        subprocess.run(["vgremove", "-y", "-f", VG], check=False, stdout=subprocess.DEVNULL)
        subprocess.run(["losetup", "-d", loop], check=False)
        shutil.rmtree(disk, ignore_errors=True)
    with open(bench.log_file) as handle:
        in_driver = report.driver_log_timings(handle.read())
    ov = bench.result["overhead"]
    legacy["mount_hit"] = ov["hit"]["runs"]
    legacy["mount_miss"] = ov["miss"]["runs"]
    legacy["unmount"] = ov["unmount"]["runs"]
    legacy.update(dind)
    summary = {k: {"median_s": round(statistics.median(v), 2), "runs": [round(x, 2) for x in v]}
               for k, v in legacy.items() if v}
    summary["payload_mb"] = args.payload_mb
    summary.update(bench.result)
    summary["in_driver_s"] = {
        action: report.median([s for a, s in in_driver if a == action])
        for action in sorted({a for a, _ in in_driver})}
    with open("/proc/loadavg") as handle:
        load_end = handle.read().strip()
    summary["params"] = {"quick": quick, "repeat": args.repeat, "trace_runs": args.trace_runs,
                         "slabs": args.slabs, "devices": args.devices,
                         "dind_repeat": args.dind_repeat, "slab_mb": int(SLAB_MB),
                         "driver_shebang": bench.shebang}
    summary["node"] = {"loadavg_start": load_start, "loadavg_end": load_end,
                       "cpus": os.cpu_count(), "python": sys.version.split()[0],
                       "seconds": round(time.monotonic() - started),
                       "phase_seconds": {k: round(v) for k, v in durations.items()}}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "bench.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    print(report.format_table(report.rows(summary)))
    print(report.format_phases(summary))


if __name__ == "__main__":
    main()
