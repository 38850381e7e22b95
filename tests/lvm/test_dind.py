"""Docker-in-Docker end to end: seed 004's proof that the cache survives, automated.

Pod A's dockerd (Debian's docker.io) keeps its data-root on the slab and imports an
image; pod A ends; pod B gets the same slab and its dockerd already has the image.

And every example in deploy/examples/: dockerd started with exactly the daemon flags the
example's docker:dind container gets (tests/dind_examples.py reads them and adds what the
image's entrypoint adds) answers on its unix socket within seconds and listens on no TCP
port.
"""

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time

import psutil
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
import dind_examples  # noqa: E402

IMAGE = "slabvol-test:1"
# How long an example's dockerd may take from exec to answering /_ping on its socket. With a
# TCP listener and no --tlsverify, dockerd sleeps 1 s, and 15 s more unless the address is
# loopback or --tls=false is given, before it even creates the daemon (moby
# daemon/command/daemon.go, loadListeners; Debian's 20.10: cmd/dockerd/daemon.go): 16 s
# whatever the machine, so any bound under 16 s catches it. Measured in the
# software-emulated VM: 4-11 s with the examples' unix-socket flags (9-10 s for the first
# start on a new slab), 24 s with the old examples' `--host=tcp://0.0.0.0:2375` (first
# start); on an unemulated host 0.2 s and 16.3 s.
START_BOUND = 15.0
# dockerd's warnings for exactly the listeners that make it sleep
INSECURE_TCP_WARNING = "without --tlsverify"
# One dockerd at a time on the node, whatever worker runs the test: under emulation, two
# starting at once miss containerd's start timeout, and a second one skews the timings.
# (pytest-xdist's xdist_group does not group anything with pytest 9: it renames
# item._nodeid, which pytest no longer reads.)
DOCKERD_LOCK = "/tmp/slabvol-it-dockerd.lock"
# dockerd gives the containerd it starts 15 s to answer (moby 20.10
# libcontainerd/supervisor/remote_daemon.go, startupTimeout), and exits if it does not. Under
# emulation, with the other workers busy, containerd sometimes needs longer: such a start is
# retried (and counted), which says nothing about the daemon flags.
CONTAINERD_TIMEOUT = "timeout waiting for containerd to start"
CONTAINERD_ATTEMPTS = 3


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


def ping(path, timeout=1.0):
    """True when the Docker API on the unix socket at path answers GET /_ping with 200."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        conn.connect(path)
        conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        status = conn.recv(4096).split(b"\r\n", 1)[0].split()
        return len(status) >= 2 and status[1] == b"200"
    except OSError:
        return False
    finally:
        conn.close()


class Dockerd:
    """dockerd with its data-root on a slab.

    ``flags`` are a pod's daemon flags (the argv after "dockerd"), kept as they are except
    that each unix:// socket path P is moved to <scratch>/P, so that the test never touches
    the node's own /run (without any unix socket flag, dockerd's default socket becomes
    <scratch>/docker.sock). What this node needs on top (data-root, exec-root, pidfile, no
    bridge/iptables in the VM) is appended; none of it adds or removes a listener.
    """

    def __init__(self, data_root, scratch, flags=()):
        flags = list(flags)
        self.sockets = []
        for i, arg in enumerate(flags):
            for prefix in ("--host=unix://", "-H=unix://", "-Hunix://", "unix://"):
                if arg.startswith(prefix) and (prefix != "unix://" or i and
                                               flags[i - 1] in ("-H", "--host")):
                    path = scratch + arg[len(prefix):]
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    flags[i] = prefix + path
                    self.sockets.append(path)
                    break
        if not self.sockets:  # dockerd's default socket, or only TCP: a way in for the test
            self.sockets.append(os.path.join(scratch, "docker.sock"))
            flags += ["-H", f"unix://{self.sockets[0]}"]
        self.sock = self.sockets[0]
        self.argv = ["dockerd", *flags, "--data-root", data_root, "--iptables=false",
                     "--bridge=none", "--ip-masq=false",
                     "--exec-root", os.path.join(scratch, "exec"),
                     "--pidfile", os.path.join(scratch, "docker.pid")]
        self.log_path = os.path.join(scratch, "dockerd.log")
        self.proc = self.log_file = None
        self.started_in = None
        self.containerd_timeouts = 0

    def docker(self, *args, check=True):
        proc = subprocess.run(["docker", "-H", f"unix://{self.sock}", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, check=False, timeout=300)
        if check and proc.returncode:
            raise AssertionError(f"docker {args} failed: {proc.stderr}\n{self.log()}")
        return proc.stdout

    def log(self, tail=3000):
        with open(self.log_path) as handle:
            text = handle.read()
        return text[-tail:] if tail else text

    def tcp_listeners(self):
        """host:port of every TCP socket that dockerd or its children (containerd)
        listen on."""
        procs = [psutil.Process(self.proc.pid)]
        procs += procs[0].children(recursive=True)
        found = set()
        for proc in procs:
            try:
                conns = (proc.net_connections if hasattr(proc, "net_connections")
                         else proc.connections)(kind="tcp")
            except psutil.NoSuchProcess:
                continue
            found |= {f"{c.laddr.ip}:{c.laddr.port}" for c in conns
                      if c.status == psutil.CONN_LISTEN}
        return sorted(found)

    def __enter__(self):
        self.lock = open(DOCKERD_LOCK, "w")
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        try:
            self.log_file = open(self.log_path, "w")
            deadline = time.monotonic() + 180
            for attempt in range(CONTAINERD_ATTEMPTS):
                started = time.monotonic()
                self.proc = subprocess.Popen(self.argv, stdout=self.log_file,
                                             stderr=subprocess.STDOUT)
                while not ping(self.sock):
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
                else:
                    break
                if self.proc.poll() is None or CONTAINERD_TIMEOUT not in self.log() or \
                        attempt + 1 == CONTAINERD_ATTEMPTS:
                    pytest.fail(f"dockerd did not start: {self.log()}")
                self.containerd_timeouts += 1
            self.started_in = time.monotonic() - started
            while self.docker("version", check=False) == "" or \
                    self.docker("info", "--format", "{{.Driver}}", check=False).strip() == "":
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"dockerd did not start: {self.log()}")
                time.sleep(1)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        try:
            if self.proc is not None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            if self.log_file is not None:
                self.log_file.close()
        finally:
            fcntl.flock(self.lock, fcntl.LOCK_UN)
            self.lock.close()


# one dockerd at a time: see DOCKERD_LOCK
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


@pytest.mark.xdist_group("dockerd")
def test_every_example_dockerd_answers_within_seconds_on_a_unix_socket_only(
        node, kubelet, pod_factory, record_property):
    """One slab (new for the first daemon, warm after), one dockerd after the other: each
    distinct set of example flags once."""
    daemons = {}
    for name, argv in dind_examples.example_daemons():
        daemons.setdefault(tuple(argv[1:]), []).append(name)
    pod = pod_factory(namespace="ci")
    assert kubelet.mount(pod, size_mb="512").status == "Success"
    rows, problems = [], []
    try:
        for flags, names in daemons.items():
            with Dockerd(kubelet.volume_dir(pod), short_dir(), flags) as dockerd:
                assert dockerd.docker("info", "--format", "{{.Driver}}").strip() == "overlay2"
                listeners = dockerd.tcp_listeners()
                seconds = dockerd.started_in
                warned = INSECURE_TCP_WARNING in dockerd.log(tail=None)
            who = ", ".join(names)
            retried = (f"  (after {dockerd.containerd_timeouts} containerd start timeouts)"
                       if dockerd.containerd_timeouts else "")
            rows.append(f"{seconds:6.1f} s  tcp={listeners or '-'}  dockerd {' '.join(flags)}"
                        f"  ({who}){retried}")
            record_property(f"dockerd start s: {who}", f"{seconds:.1f}{retried}")
            if seconds > START_BOUND:
                problems.append(f"{who}: answered after {seconds:.1f} s (> {START_BOUND} s)")
            if listeners:
                problems.append(f"{who}: listens on TCP {listeners}")
            if warned:
                problems.append(f"{who}: dockerd warns of a TCP listener {INSECURE_TCP_WARNING}")
    finally:
        assert kubelet.unmount(pod).status == "Success"
    print("\n".join(["dockerd start per example (exec to /_ping):", *rows]))
    assert not problems, "\n".join(problems + rows)
