"""Docker-in-Docker end to end: seed 004's proof that the cache survives, automated.

Pod A's dockerd (Debian's docker.io) keeps its data-root on the slab and imports an
image; pod A ends; pod B gets the same slab and its dockerd already has the image.
"""

import os
import shutil
import subprocess
import tarfile
import tempfile
import time

import pytest

IMAGE = "slabvol-test:1"


def build_image_tarball(path):
    """A tiny root filesystem (busybox-static) as a tarball for `docker import`."""
    busybox = shutil.which("busybox")
    assert busybox, "busybox-static is needed (apt-get install busybox-static)"
    with tarfile.open(path, "w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        info = tarfile.TarInfo("bin/sh")
        info.type = tarfile.SYMTYPE
        info.linkname = "busybox"
        tar.addfile(info)


def short_dir():
    """A scratch dir for dockerd's sockets: unix socket paths must stay under 104 bytes."""
    return tempfile.mkdtemp(prefix="d", dir="/tmp")


class Dockerd:
    def __init__(self, data_root, scratch):
        self.sock = os.path.join(scratch, "docker.sock")
        self.argv = ["dockerd", "--data-root", data_root, "--iptables=false",
                     "--bridge=none", "--ip-masq=false", "-H", f"unix://{self.sock}",
                     "--exec-root", os.path.join(scratch, "exec"),
                     "--pidfile", os.path.join(scratch, "docker.pid")]
        self.log_path = os.path.join(scratch, "dockerd.log")
        self.proc = None

    def docker(self, *args, check=True):
        proc = subprocess.run(["docker", "-H", f"unix://{self.sock}", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, check=False, timeout=300)
        if check and proc.returncode:
            raise AssertionError(f"docker {args} failed: {proc.stderr}\n{self.log()}")
        return proc.stdout

    def log(self):
        with open(self.log_path) as handle:
            return handle.read()[-3000:]

    def __enter__(self):
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.argv, stdout=self.log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while self.docker("version", check=False) == "" or \
                self.docker("info", "--format", "{{.Driver}}", check=False).strip() == "":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dockerd did not start: {self.log()}")
            time.sleep(1)
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log_file.close()


# one dockerd at a time: under emulation, two starting at once miss containerd's start timeout
@pytest.mark.xdist_group("dockerd")
@pytest.mark.parametrize("fs_type,size_mb", [("ext4", "512"), ("xfs", "512")])
def test_pod_b_finds_the_image_pod_a_loaded(node, kubelet, pod_factory, tmp_path, fs_type,
                                            size_mb):
    tarball = str(tmp_path / "rootfs.tar")
    build_image_tarball(tarball)
    a, b = pod_factory(namespace="ci"), pod_factory(namespace="ci")

    assert kubelet.mount(a, size_mb=size_mb, fs_type=fs_type).status == "Success"
    slab = node.slab_at(kubelet.volume_dir(a))
    with Dockerd(kubelet.volume_dir(a), short_dir()) as dockerd:
        assert dockerd.docker("info", "--format", "{{.Driver}}").strip() == "overlay2"
        assert IMAGE not in dockerd.docker("images", "--format", "{{.Repository}}:{{.Tag}}")
        dockerd.docker("import", tarball, IMAGE)
        out = dockerd.docker("run", "--rm", "--network", "none", "--security-opt",
                             "apparmor=unconfined", IMAGE, "/bin/busybox", "echo", "layered")
        assert out.strip() == "layered"
    assert kubelet.unmount(a).status == "Success"

    call = kubelet.mount(b, size_mb=size_mb, fs_type=fs_type)
    assert call.status == "Success" and "reused" in call.message
    assert node.slab_at(kubelet.volume_dir(b)) == slab
    with Dockerd(kubelet.volume_dir(b), short_dir()) as dockerd:
        images = dockerd.docker("images", "--format", "{{.Repository}}:{{.Tag}}")
        assert IMAGE in images.split()
    assert kubelet.unmount(b).status == "Success"
