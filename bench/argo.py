"""Hit mount of slabvol against Argo's Go vol_plugin, same VM, same run (issue 10).

    scripts/on-node bench/argo.sh ARGO_VOL_PLUGIN      (as root; results in out/argo/)

ARGO_VOL_PLUGIN is Argo's binary, built outside this repository from argoproj/argo-workflows
at commit ab3e759613a310c81834e7984f1ca12417929031 (platform/source/go/src/applatix.io/
vol_plugin) with Debian's Go in GOPATH mode:

    apt-get install golang-go golang-github-mattn-go-sqlite3-dev \
        golang-github-satori-go.uuid-dev gcc
    GO111MODULE=off GOPATH=$DIR/gopath:/usr/share/gocode go build -o vol_plugin \
        applatix.io/vol_plugin        # with the sources under $DIR/gopath/src/applatix.io/

Runs as root on a node with device-mapper (scripts/on-node boots the VM). Each driver gets
its own loop-backed VG (Argo: its constant "vg-ax"; slabvol: "slabvol_argo" via its config),
512 MiB ext4 slabs, and is called the way the kubelet calls a FlexVolume driver: a new
process per call, `<exe> init`, `<exe> mount <dir> <json>`, `<exe> unmount <dir>`, with
the volume dir (/var/lib/kubelet/pods/<uid>/volumes/ax~vol_plugin/<name>) created 0750
before a mount and removed after a successful unmount, both outside the timed call.

Sequence: N inits each (interleaved), one miss + unmount each (the slab is left empty, so
it is kept free), then N hit cycles (mount + unmount), alternating Argo and slabvol cycle
by cycle. Each hit is checked to have reused the one slab. Results: $OUT/results.json
and a table on stdout. Argo's binary is copied to the node's local disk; slabvol runs as
bench/run runs it (its interpreter and packages read from the shared filesystem in the VM).
"""

import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "lvm"))
from kubelet import Pod, Kubelet  # noqa: E402  (only its options() and volume_dir())

ARGO_VG = "vg-ax"                                 # constants.AX_VOL_VG_NAME
ARGO_DB = "/var/lib/ax_volume_metadata.db"        # constants.AX_VOL_DB_NAME
SLABVOL_VG = "slabvol_argo"
SLAB_MB = "512"
KUBELET_DIR = "/var/lib/kubelet"
N = int(os.environ.get("ARGO_BENCH_N", "7"))
VG_SIZE = "1500M"   # > 512 MiB free for the miss (Argo wants vg_free > size)
ENV = dict(os.environ, LC_ALL="C", LANG="C", LVM_SUPPRESS_FD_WARNINGS="1")
OUT = os.path.join(os.environ.get("SLABVOL_OUT", os.path.join(REPO, "out")), "argo")


def say(text):
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def sh(*argv):
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, env=ENV)
    if proc.returncode:
        raise RuntimeError(f"{argv} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
    return proc.stdout.strip()


def loadavg():
    with open("/proc/loadavg") as handle:
        return handle.read().strip()


def lv_names(vg):
    return sh("lvs", "--noheadings", "-o", "lv_name", vg).split()


def archives(vg):
    d = "/etc/lvm/archive"
    return sorted(f for f in os.listdir(d) if f.startswith(vg + "_")) if os.path.isdir(d) else []


def mounted(path):
    with open("/proc/self/mounts") as handle:
        return any(line.split()[1] == path for line in handle)


class Driver:
    """One driver executable, called as the kubelet calls it; times each call."""

    def __init__(self, name, exe, env):
        self.name, self.exe, self.env = name, exe, env
        self.kubelet = Kubelet(exe, KUBELET_DIR, env)  # for options() and volume_dir() only
        self.times = {"init": [], "miss": [], "hit": [], "miss_unmount": [], "unmount": []}
        self.calls = []

    def call(self, *args):
        argv = [self.exe, *args]
        start = time.monotonic()
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=self.env, timeout=300)
        seconds = time.monotonic() - start
        out = proc.stdout.decode("utf-8", "replace")
        err = proc.stderr.decode("utf-8", "replace")
        try:
            result = json.loads(out)
        except ValueError:
            raise RuntimeError(f"{self.name} {args[:2]}: rc {proc.returncode}, stdout {out!r}, "
                               f"stderr {err!r}") from None
        self.calls.append({"argv": argv[1:3], "seconds": round(seconds, 4),
                           "rc": proc.returncode, "stdout": out, "stderr": err})
        if result.get("status") != "Success":
            raise RuntimeError(f"{self.name} {args[:2]} failed: {out!r} {err!r}")
        return seconds, result, err

    def init(self):
        seconds, _, _ = self.call("init")
        self.times["init"].append(seconds)

    def mount(self, pod, kind):
        target = self.kubelet.volume_dir(pod)
        os.makedirs(target, mode=0o750, exist_ok=True)
        os.chmod(target, 0o750)
        options = self.kubelet.options(pod, size_mb=SLAB_MB, ax_vol_type="ax-docker-graph-storage")
        seconds, result, err = self.call("mount", target, json.dumps(options))
        assert mounted(target), f"{self.name}: {target} not mounted after mount"
        self.times[kind].append(seconds)
        return seconds, result, err

    def unmount(self, pod, kind):
        target = self.kubelet.volume_dir(pod)
        seconds, result, err = self.call("unmount", target)
        assert not mounted(target), f"{self.name}: {target} still mounted after unmount"
        os.rmdir(target)
        self.times[kind].append(seconds)
        return seconds, result, err


def install_slabvol(plugin):
    """As bench/bench.py's install(): the installed layout, `#!<venv python> -S`."""
    from slabvol.install.runtime import Runtime, render_executable

    content = render_executable(REPO, Runtime(python=sys.executable, venv=sys.prefix))
    os.makedirs(os.path.dirname(plugin), exist_ok=True)
    with open(plugin, "w") as dst:
        dst.write(content)
    os.chmod(plugin, 0o755)
    return content.split("\n", 1)[0]


def med(values):
    return statistics.median(values) if values else None


def main(argv):
    if len(argv) != 1 or not os.access(argv[0], os.X_OK):
        sys.exit(__doc__)
    argo_bin = os.path.abspath(argv[0])
    os.makedirs(OUT, exist_ok=True)
    results = {"loadavg_vm_start": loadavg(), "cpus": os.cpu_count(), "n": N,
               "slab_mb": int(SLAB_MB), "python": sys.version.split()[0]}
    work = tempfile.mkdtemp(prefix="argo-bench-")          # RAM disk: config, log, plugins
    disk = tempfile.mkdtemp(prefix="disk-", dir=OUT)        # loop backing files on a disk
    loops = []
    drivers = []
    try:
        # -- the two VGs ---------------------------------------------------------------
        for vg, image in ((ARGO_VG, "argo.img"), (SLABVOL_VG, "slabvol.img")):
            path = os.path.join(disk, image)
            sh("truncate", "-s", VG_SIZE, path)
            loop = sh("losetup", "--find", "--show", path)
            loops.append(loop)
            sh("pvcreate", "-q", loop)
            sh("vgcreate", "-q", vg, loop)
            say(f"VG {vg} on {loop} ({path})")
        results["lvm_version"] = sh("lvm", "version").splitlines()[0].strip()

        # -- Argo: its constants fix VG, DB and lock paths --------------------------------
        os.makedirs(os.path.dirname(ARGO_DB), exist_ok=True)
        if os.path.exists(ARGO_DB):
            os.remove(ARGO_DB)
        argo_exe = os.path.join(work, "argo", "ax~vol_plugin", "vol_plugin")
        os.makedirs(os.path.dirname(argo_exe))
        shutil.copy2(argo_bin, argo_exe)
        argo = Driver("argo", argo_exe, dict(ENV))
        drivers.append(argo)

        # -- slabvol: installed layout, own config ---------------------------------------
        log_file = os.path.join(work, "slabvol.log")
        config = os.path.join(work, "slabvol.conf")
        with open(config, "w") as handle:
            handle.write(f"[slabvol]\nvolume_group = {SLABVOL_VG}\nkubelet_dir = {KUBELET_DIR}\n"
                         f"log_file = {log_file}\nlock_file = {work}/lock\n")
        slabvol_exe = os.path.join(work, "slabvol", "ax~vol_plugin", "vol_plugin")
        shebang = install_slabvol(slabvol_exe)
        slabvol = Driver("slabvol", slabvol_exe, dict(ENV, SLABVOL_CONFIG=config))
        drivers.append(slabvol)
        os.makedirs(os.path.join(KUBELET_DIR, "pods"), exist_ok=True)
        results["argo_exe"] = {"installed": argo_exe, "built_from": argo_bin}
        results["slabvol_exe"] = {"installed": slabvol_exe, "shebang": shebang,
                                  "config": open(config).read()}
        say(f"argo {argo_exe}; slabvol {slabvol_exe} ({shebang})")

        # spawn reference: a bare process and the bare interpreter, as a scale for the VM
        spawn = {"true": [], "python -S -c pass": []}
        for _ in range(3):
            for key, argv in (("true", ["/bin/true"]),
                              ("python -S -c pass", [sys.executable, "-S", "-c", "pass"])):
                t = time.monotonic()
                subprocess.run(argv, check=True)
                spawn[key].append(round(time.monotonic() - t, 4))
        results["spawn_reference"] = spawn

        # -- init, interleaved -------------------------------------------------------------
        for i in range(N):
            for d in (argo, slabvol):
                d.init()
            say(f"init {i + 1}/{N}: argo {argo.times['init'][-1]:.3f} s, "
                f"slabvol {slabvol.times['init'][-1]:.3f} s")

        # -- miss + unmount (the slab stays empty: < 50% used, kept free) -----------------
        warm = {}
        for d, vg in ((argo, ARGO_VG), (slabvol, SLABVOL_VG)):
            pod = Pod(namespace="bench")
            seconds, result, err = d.mount(pod, "miss")
            names = lv_names(vg)
            assert len(names) == 1, f"{d.name}: {names}"
            warm[d.name] = names[0]
            if d is slabvol:
                assert "created slab" in result.get("message", ""), result
            u, _, uerr = d.unmount(pod, "miss_unmount")
            assert lv_names(vg) == names, f"{d.name}: slab not kept: {lv_names(vg)}"
            say(f"miss {d.name}: mount {seconds:.3f} s ({warm[d.name]}), unmount {u:.3f} s")
        results["warm_slab"] = warm

        # -- hit cycles, alternating Argo and slabvol ----------------------------------------
        reuse = {"argo": [], "slabvol": []}
        archive_before = {vg: len(archives(vg)) for vg in (ARGO_VG, SLABVOL_VG)}
        for i in range(N):
            for d, vg in ((argo, ARGO_VG), (slabvol, SLABVOL_VG)):
                pod = Pod(namespace="bench")
                seconds, result, err = d.mount(pod, "hit")
                names = lv_names(vg)
                if d is argo:
                    ok = f"Reusing LV: {warm['argo']}" in err and names == [warm["argo"]]
                else:
                    msg = result.get("message", "")
                    ok = "reused" in msg and warm["slabvol"] in msg and names == [warm["slabvol"]]
                reuse[d.name].append(ok)
                assert ok, f"{d.name} hit {i + 1} did not reuse: {result} {err!r} {names}"
                u, _, _ = d.unmount(pod, "unmount")
                assert lv_names(vg) == [warm[d.name]], f"{d.name}: slab not kept"
                say(f"hit {i + 1}/{N} {d.name}: mount {seconds:.3f} s, unmount {u:.3f} s, "
                    f"reused={ok}")
        results["reused"] = reuse
        results["archive_files_added_by_hit_cycles"] = {
            vg: len(archives(vg)) - archive_before[vg] for vg in (ARGO_VG, SLABVOL_VG)}

        # Argo's own record: used_counter = 1 (create) + N hits, in_use 0
        con = sqlite3.connect(ARGO_DB)
        results["argo_db"] = [list(r) for r in con.execute(
            "SELECT lv_name, used_counter, in_use, state, size_mb FROM ax_vols")]
        con.close()
        results["slabvol_tags"] = sh("lvs", "--noheadings", "-o", "lv_name,lv_tags", SLABVOL_VG)

        # -- summary ---------------------------------------------------------------------------
        table = {}
        for key in ("init", "miss", "miss_unmount", "hit", "unmount"):
            a, s = argo.times[key], slabvol.times[key]
            table[key] = {"argo_median_s": round(med(a), 4), "slabvol_median_s": round(med(s), 4),
                          "ratio_slabvol_over_argo": round(med(s) / med(a), 2),
                          "argo_runs_s": [round(x, 4) for x in a],
                          "slabvol_runs_s": [round(x, 4) for x in s]}
        results["table"] = table
        results["calls"] = {"argo": argo.calls, "slabvol": slabvol.calls}
        results["loadavg_vm_end"] = loadavg()
        print()
        print(f"{'':14} {'Argo med':>9} {'slabvol med':>12} {'ratio':>6}   runs (s)")
        for key, row in table.items():
            print(f"{key:14} {row['argo_median_s']*1000:8.0f}ms {row['slabvol_median_s']*1000:10.0f}ms "
                  f"{row['ratio_slabvol_over_argo']:6.2f}   argo {row['argo_runs_s']}")
            print(f"{'':47}slabvol {row['slabvol_runs_s']}")
        print(f"every hit reused: argo {all(reuse['argo'])} ({len(reuse['argo'])}), "
              f"slabvol {all(reuse['slabvol'])} ({len(reuse['slabvol'])})")
        print(f"argo DB: {results['argo_db']}")
        print(f"slabvol LV: {results['slabvol_tags']}")
        print(f"archive files added by the hit cycles: {results['archive_files_added_by_hit_cycles']}")
        print(f"VM loadavg start {results['loadavg_vm_start']} end {results['loadavg_vm_end']}")
    finally:
        results.setdefault("calls", {d.name: d.calls for d in drivers})
        results.setdefault("partial_times", {d.name: d.times for d in drivers})
        if os.path.exists(os.path.join(work, "slabvol.log")):
            shutil.copy(os.path.join(work, "slabvol.log"), os.path.join(OUT, "slabvol-driver.log"))
        with open(os.path.join(OUT, "results.json"), "w") as handle:
            json.dump(results, handle, indent=2)
        subprocess.run(["sh", "-c", f"grep -o ' {KUBELET_DIR}/pods/[^ ]*' /proc/self/mounts | "
                        "xargs -r -n1 umount -l"], check=False)
        for vg in (ARGO_VG, SLABVOL_VG):
            subprocess.run(["vgremove", "-q", "-y", "-f", vg], check=False, env=ENV,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for loop in loops:
            subprocess.run(["losetup", "-d", loop], check=False)
        shutil.rmtree(disk, ignore_errors=True)
        say(f"results in {OUT}/results.json")


if __name__ == "__main__":
    main(sys.argv[1:])
