"""Measure what slabvol is for: how long a pod waits for its graph storage, cold vs warm.

Runs as root on a node with device-mapper (bench/run boots a VM where needed). Reports
median seconds over --repeat runs; under the VM's software emulation absolute numbers are
several times a real node's, the ratios are what to read. Writes out/bench.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "lvm"))

from kubelet import Kubelet, Pod  # noqa: E402
from test_dind import Dockerd  # noqa: E402

VG = "slabvol_bench"


def sh(*argv):
    return subprocess.run(argv, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True).stdout.strip()


def timed(fn):
    start = time.monotonic()
    value = fn()
    return time.monotonic() - start, value


def image_tarball(path, payload_mb):
    """A root filesystem with busybox and payload_mb of incompressible data: the stand-in
    for a base image that a cold cache must load again."""
    root = tempfile.mkdtemp()
    os.makedirs(os.path.join(root, "bin"))
    sh("cp", sh("sh", "-c", "command -v busybox"), os.path.join(root, "bin", "busybox"))
    with open(os.path.join(root, "payload"), "wb") as handle:
        handle.write(os.urandom(payload_mb * 1024 * 1024))
    sh("tar", "-C", root, "-cf", path, ".")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--payload-mb", type=int, default=64)
    args = parser.parse_args()
    out_dir = os.environ.get("SLABVOL_OUT", os.path.join(REPO, "out"))
    work = tempfile.mkdtemp(prefix="slabvol-bench-")
    sh("truncate", "-s", "3G", f"{work}/pv.img")
    loop = sh("losetup", "--find", "--show", f"{work}/pv.img")
    sh("pvcreate", "-q", loop)
    sh("vgcreate", "-q", VG, loop)
    config = f"{work}/slabvol.conf"
    with open(config, "w") as handle:
        handle.write(f"[slabvol]\nvolume_group = {VG}\nkubelet_dir = {work}/kubelet\n"
                     f"log_file = {work}/log\nlock_file = {work}/lock\n")
    kubelet = Kubelet(os.path.join(REPO, "vol_plugin"), f"{work}/kubelet",
                      dict(os.environ, SLABVOL_CONFIG=config))
    tarball = f"{work}/image.tar"
    image_tarball(tarball, args.payload_mb)
    results = {k: [] for k in ("init", "mount_miss", "mount_hit", "unmount",
                               "cold_pod_ready", "warm_pod_ready")}
    try:
        for i in range(args.repeat):
            results["init"].append(timed(kubelet.init)[0])
            # graph storage only: a miss (new namespace => new slab) vs a hit
            ns = f"bench-{i}"
            first, second = Pod(namespace=ns), Pod(namespace=ns)
            seconds, call = timed(lambda: kubelet.mount(first, size_mb="1024"))
            assert call.status == "Success", call.output
            results["mount_miss"].append(seconds)
            results["unmount"].append(timed(lambda: kubelet.unmount(first))[0])
            seconds, call = timed(lambda: kubelet.mount(second, size_mb="1024"))
            assert "reused" in call.message, call.output
            results["mount_hit"].append(seconds)
            kubelet.unmount(second)
            # a dind pod until its image is usable: cold (miss + load) vs warm (hit)
            ns = f"dind-{i}"
            for key, pod in (("cold_pod_ready", Pod(namespace=ns)),
                             ("warm_pod_ready", Pod(namespace=ns))):
                start = time.monotonic()
                assert kubelet.mount(pod, size_mb="1024").status == "Success"
                scratch = tempfile.mkdtemp(dir=work)
                with Dockerd(kubelet.volume_dir(pod), scratch) as dockerd:
                    if "bench:1" not in dockerd.docker("images", "--format",
                                                       "{{.Repository}}:{{.Tag}}"):
                        dockerd.docker("import", tarball, "bench:1")
                    results[key].append(time.monotonic() - start)
                kubelet.unmount(pod)
    finally:
        subprocess.run(["sh", "-c", f"grep -o ' {work}/[^ ]*' /proc/self/mounts | "
                        "xargs -r -n1 umount -l"], check=False)
        subprocess.run(["vgremove", "-y", "-f", VG], check=False, stdout=subprocess.DEVNULL)
        subprocess.run(["losetup", "-d", loop], check=False)
    summary = {k: {"median_s": round(statistics.median(v), 2), "runs": [round(x, 2) for x in v]}
               for k, v in results.items()}
    summary["payload_mb"] = args.payload_mb
    print(f"{'measure':16} {'median s':>9}   runs (payload {args.payload_mb} MiB)")
    for key, row in summary.items():
        if isinstance(row, dict):
            print(f"{key:16} {row['median_s']:9.2f}   {row['runs']}")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "bench.json"), "w") as handle:
        json.dump(summary, handle, indent=2)


if __name__ == "__main__":
    main()
