"""deploy/: the installer DaemonSet, its image and the CI examples parse and are complete.

Building and running the image needs a container runtime and a cluster, which these tests
do not have; they check what can be checked statically: every manifest parses, has the
fields the cluster needs, and every flexVolume would be accepted by the driver's own
option parser (``slabvol.flex.parse_options``, fed the JSON the kubelet would send).
"""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest
import yaml

from slabvol import DRIVER_NAME
from slabvol.flex import parse_options

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
DEPLOY = os.path.join(REPO, "deploy")
EXAMPLES = os.path.join(DEPLOY, "examples")


def read(*parts):
    with open(os.path.join(*parts), encoding="utf-8") as handle:
        return handle.read()


sys.path.insert(0, os.path.join(REPO, "tests"))
import dind_examples  # noqa: E402  (shared with the real-LVM tier's tests/lvm/test_dind.py)


def pod_specs():
    """(example name, pod spec) of every example: tests/dind_examples.py unwraps the
    Jenkinsfile, the GitLab pod spec patch, the Helm values and the legacy ARC CRD."""
    return dind_examples.pod_specs()


EXAMPLE_SPECS = pod_specs()


def test_every_example_file_is_covered():
    found = set()
    for dirpath, _, filenames in os.walk(EXAMPLES):
        found |= {os.path.relpath(os.path.join(dirpath, f), EXAMPLES) for f in filenames}
    assert found == set(dind_examples.FILES)


@pytest.mark.parametrize("name, spec", EXAMPLE_SPECS, ids=[n for n, _ in EXAMPLE_SPECS])
def test_the_example_mounts_a_slab_at_var_lib_docker_of_a_privileged_dind(name, spec):
    flex = [v for v in spec["volumes"] if "flexVolume" in v]
    assert len(flex) == 1, "one flexVolume"
    volume = flex[0]
    source = volume["flexVolume"]
    assert source["driver"] == DRIVER_NAME == "ax/vol_plugin"
    assert source.get("fsType") in ("ext4", "xfs")
    assert isinstance(source["options"]["size_mb"], str), "options must be strings"
    assert all(isinstance(v, str) for v in source["options"].values())
    daemons = [c for c in dind_examples.all_containers(spec)
               if any(m["name"] == volume["name"] for m in c.get("volumeMounts", []))]
    assert len(daemons) == 1, "exactly one container mounts the slab"
    dind = daemons[0]
    assert "dind" in dind["image"]
    assert dind["securityContext"]["privileged"] is True
    mount = next(m for m in dind["volumeMounts"] if m["name"] == volume["name"])
    assert mount["mountPath"] == "/var/lib/docker"
    assert not mount.get("readOnly")


@pytest.mark.parametrize("name, spec", EXAMPLE_SPECS, ids=[n for n, _ in EXAMPLE_SPECS])
def test_the_driver_accepts_the_example_options(name, spec):
    source = next(v["flexVolume"] for v in spec["volumes"] if "flexVolume" in v)
    # the admission policy refuses pods that set the kubelet's keys themselves
    assert not [k for k in source.get("options", {}) if k.startswith("kubernetes.io/")]
    # what the kubelet passes: the pod's options plus its own kubernetes.io/* keys
    options = dict(source.get("options", {}))
    options.update({"kubernetes.io/fsType": source.get("fsType", ""),
                    "kubernetes.io/readwrite": "rw",
                    "kubernetes.io/pod.namespace": "ci",
                    "kubernetes.io/pod.uid": "0c5d5a7e-1111-2222-3333-444455556666"})
    request, readonly = parse_options(json.dumps(options))
    assert request.size_mb >= 1024 and not readonly


@pytest.mark.parametrize("name, spec", EXAMPLE_SPECS, ids=[n for n, _ in EXAMPLE_SPECS])
def test_the_docker_clients_reach_the_daemon_through_a_shared_unix_socket(name, spec):
    """Every container that sets DOCKER_HOST points it at one of the daemon's unix
    sockets, seen through an emptyDir that both containers mount; no TCP."""
    dind = dind_examples.dind_container(spec)
    volumes = {v["name"]: v for v in spec["volumes"]}
    sockets = {}
    for host in dind_examples.hosts(dind_examples.dockerd_argv(dind)):
        assert host.startswith("unix://"), f"dind listens on {host}"
        volume, inside = dind_examples.volume_path(dind, host[len("unix://"):])
        assert volume and "emptyDir" in volumes[volume], f"{host} is not in an emptyDir"
        sockets[(volume, inside)] = host
    clients = [c for c in dind_examples.all_containers(spec)
               if c is not dind and "DOCKER_HOST" in dind_examples.container_env(c)]
    assert clients, "some container talks to the daemon"
    for client in clients:
        host = dind_examples.docker_host(client)
        assert host.startswith("unix://"), f"{client['name']}: DOCKER_HOST={host}"
        seen = dind_examples.volume_path(client, host[len("unix://"):])
        assert seen in sockets, f"{client['name']}: {host} is not the daemon's socket"


# -- the installer DaemonSet ----------------------------------------------------------------

def daemonset_docs():
    """The namespace and the DaemonSet of the kustomize base (deploy/base/; the overlays and
    the schemas are tested in test_kustomize.py)."""
    (namespace,) = yaml.safe_load_all(read(DEPLOY, "base", "namespace.yaml"))
    (daemonset,) = yaml.safe_load_all(read(DEPLOY, "base", "daemonset.yaml"))
    return [namespace, daemonset]


def test_the_daemonset_manifest_has_a_privileged_namespace_and_the_daemonset():
    namespace, daemonset = daemonset_docs()
    assert namespace["kind"] == "Namespace"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert daemonset["kind"] == "DaemonSet" and daemonset["apiVersion"] == "apps/v1"
    assert daemonset["metadata"]["namespace"] == namespace["metadata"]["name"]
    template = daemonset["spec"]["template"]
    selector = daemonset["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items()


def test_the_daemonset_pod_can_enter_the_host_and_stages_the_source_on_it():
    _, daemonset = daemonset_docs()
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["hostPID"] is True  # nsenter --target 1
    assert {"operator": "Exists"} not in pod.get("tolerations", [])  # not every taint
    assert all(t.get("key") for t in pod.get("tolerations", []))
    (container,) = pod["initContainers"]  # install.sh: the pod is Ready only if it succeeded
    assert container["name"] == "install" and container["args"] == ["install"]
    assert container["securityContext"]["privileged"] is True
    env = {e["name"]: e.get("value") for e in container["env"]}
    stage = env["SLABVOL_STAGE"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == stage)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["hostPath"]["path"] == stage  # same path in the container and on the host
    assert volume["hostPath"]["type"] == "DirectoryOrCreate"
    (waiter,) = pod["containers"]
    assert waiter["args"] == ["wait"] and not waiter["securityContext"].get("privileged")
    # the base's arguments are ones install.sh accepts, and create no volume group: the
    # loop file (trial-loopback) and the disk (disk) are overlays an operator picks
    from slabvol.install.options import parse_args
    assert env["INSTALL_ARGS"] == ""
    opts = parse_args(shlex.split(env["INSTALL_ARGS"]) + ["--source", REPO], environ={})
    assert not opts.loopback and not opts.disk and not opts.skip_vg and not opts.uninstall


def test_the_entrypoint_runs_install_sh_in_the_host_namespaces():
    text = read(DEPLOY, "entrypoint.sh")
    assert subprocess.run(["sh", "-n", os.path.join(DEPLOY, "entrypoint.sh")]).returncode == 0
    assert re.search(r'nsenter --target 1 --mount .*-- "\$stage/src/install.sh" \$args', text)
    assert "--wheelhouse $stage/src/wheelhouse" in text
    assert os.access(os.path.join(DEPLOY, "entrypoint.sh"), os.X_OK)


def run_entrypoint(tmp_path, mode, install_rc, **extra_env):
    """deploy/entrypoint.sh MODE with a fake image tree, host stage dir and nsenter (which
    runs the command after "--" here); the fake install.sh logs its arguments."""
    image, stage, bin_dir = tmp_path / "image", tmp_path / "stage", tmp_path / "bin"
    for d in (image / "wheelhouse", stage, bin_dir):
        d.mkdir(parents=True)
    (image / "install.sh").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\n'
                                      f'echo "install.sh: no volume group" >&2\n'
                                      f'exit {install_rc}\n')
    (bin_dir / "nsenter").write_text('#!/bin/sh\nwhile [ "$1" != "--" ]; do shift; done\n'
                                     'shift\nexec "$@"\n')
    for script in (image / "install.sh", bin_dir / "nsenter"):
        script.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLABVOL_STAGE": str(stage),
           "SLABVOL_IMAGE_SOURCE": str(image), "INSTALL_ARGS": "--disk /dev/nvme1n1",
           "NODE_NAME": "node-1", **extra_env}
    out = subprocess.run(["sh", os.path.join(DEPLOY, "entrypoint.sh"), mode], env=env,
                         capture_output=True, text=True, timeout=20)
    return out, stage


def test_the_init_container_fails_when_install_sh_fails_so_the_pod_never_gets_ready(tmp_path):
    out, stage = run_entrypoint(tmp_path, "install", install_rc=3)
    assert out.returncode == 3, out  # Init:CrashLoopBackOff, and the rollout stalls
    assert "install.sh: no volume group" in out.stderr  # kubectl logs -c install shows why
    assert (tmp_path / "args").read_text().split() == [
        "--disk", "/dev/nvme1n1", "--wheelhouse", f"{stage}/src/wheelhouse"]


def test_the_init_container_exits_after_a_successful_install(tmp_path):
    out, stage = run_entrypoint(tmp_path, "install", install_rc=0)  # returns: does not sleep
    assert out.returncode == 0, out
    assert (stage / "src" / "install.sh").is_file()
    assert "slabvol installer on node-1: done" in out.stdout


NFD_FILE = "/etc/kubernetes/node-feature-discovery/features.d/slabvol"


@pytest.mark.parametrize("install_args, expected", [
    ("--disk /dev/nvme1n1", ["--disk", "/dev/nvme1n1", "--nfd", NFD_FILE]),
    ("", ["--nfd", NFD_FILE]),
    ("--uninstall", ["--uninstall"]),  # it removes the feature file named in the config
])
def test_nfd_features_file_becomes_install_sh_nfd(tmp_path, install_args, expected):
    """deploy/components/nfd sets NFD_FEATURES_FILE; the entrypoint passes --nfd FILE."""
    out, stage = run_entrypoint(tmp_path, "install", install_rc=0, INSTALL_ARGS=install_args,
                                NFD_FEATURES_FILE=NFD_FILE)
    assert out.returncode == 0, out
    assert (tmp_path / "args").read_text().split() == expected + [
        "--wheelhouse", f"{stage}/src/wheelhouse"]


def sleeping(pid):
    """The entrypoint's child has become its sleep. Between fork and exec the child is still
    a copy of the shell with the TERM trap, and a SIGTERM sent to it then is lost when it
    execs (the container's end kills it; a test has no such end)."""
    import psutil

    try:
        return [c.cmdline()[:1] for c in psutil.Process(pid).children()] == [["sleep"]]
    except psutil.Error:
        return False


def test_the_main_container_waits_until_sigterm_and_then_ends_at_once():
    import signal
    import time

    import psutil
    proc = subprocess.Popen(["sh", os.path.join(DEPLOY, "entrypoint.sh"), "wait"])
    try:
        deadline = time.monotonic() + 10
        while not sleeping(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)  # the trap is set once its sleep runs
        (child,) = psutil.Process(proc.pid).children()
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        # its sleep was killed, not left: gone, or a zombie (dead; reparented to an init
        # that may take a second or more to reap it, which psutil.wait_procs waited out)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.01)
        else:
            raise AssertionError(f"the sleep (pid {child.pid}) outlived the entrypoint")
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_entrypoint_refuses_an_unknown_mode():
    out = subprocess.run(["sh", os.path.join(DEPLOY, "entrypoint.sh"), "sleep"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 2 and "usage" in out.stderr


def test_the_dockerfile_copies_files_that_exist_and_runs_the_entrypoint():
    text = read(DEPLOY, "Dockerfile")
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert os.path.exists(os.path.join(REPO, source)), source
    assert "COPY deploy/entrypoint.sh /usr/local/bin/slabvol-installer" in text
    assert 'ENTRYPOINT ["/usr/local/bin/slabvol-installer"]' in text
    # the image's source tree is where the entrypoint copies it from
    assert 'cp -a "${SLABVOL_IMAGE_SOURCE:-/slabvol}/."' in read(DEPLOY, "entrypoint.sh")
    assert "COPY install.sh " in text and "/slabvol/" in text
    pod = daemonset_docs()[1]["spec"]["template"]["spec"]
    images = {c["image"] for c in pod["initContainers"] + pod["containers"]}
    assert len(images) == 1
    (image,) = images
    assert image.endswith(":0.1.0") and "slabvol-installer" in image


def test_the_image_builds_its_wheelhouse_for_the_oldest_python_install_sh_accepts():
    """Issue #9: built with python:3.12, the wheelhouse held a click that needs 3.10."""
    from slabvol.install.layout import MIN_PYTHON
    oldest = ".".join(map(str, MIN_PYTHON))
    text = read(DEPLOY, "Dockerfile")
    assert "COPY deploy/build-wheelhouse " in text
    assert re.search(r"^RUN build-wheelhouse /wheelhouse /src$", text, re.MULTILINE)
    assert "pip " not in text, "the wheelhouse is built by deploy/build-wheelhouse only"
    assert "COPY --from=wheels /wheelhouse /slabvol/wheelhouse" in text
    script = read(DEPLOY, "build-wheelhouse")
    assert f"min_python=${{SLABVOL_MIN_PYTHON:-{oldest}}}" in script
    assert re.search(r'pip download .*\\\n\s+--python-version "\$min_python"', script)
    assert "--only-binary=:all:" in script and "--no-deps" in script
    assert os.access(os.path.join(DEPLOY, "build-wheelhouse"), os.X_OK)
    assert subprocess.run(["sh", "-n", os.path.join(DEPLOY, "build-wheelhouse")]).returncode == 0
    # scripts/check-wheelhouse checks from the oldest to the newest Python
    check = read(REPO, "scripts", "check-wheelhouse")
    assert f"versions=({oldest} " in check


def fake_wheel(directory, name, version, tag="py3-none-any", requires_python=None,
               requires=()):
    """A wheel with nothing but its metadata: enough for pip to resolve it."""
    import zipfile
    dist_info = f"{name}-{version}.dist-info"
    metadata = [f"Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if requires_python:
        metadata.append(f"Requires-Python: {requires_python}")
    metadata += [f"Requires-Dist: {r}" for r in requires]
    files = {f"{dist_info}/METADATA": "\n".join(metadata) + "\n",
             f"{dist_info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\n"
                                   f"Root-Is-Purelib: true\nTag: {tag}\n"}
    files[f"{dist_info}/RECORD"] = "".join(f"{f},,\n" for f in files) + f"{dist_info}/RECORD,,\n"
    with zipfile.ZipFile(os.path.join(directory, f"{name}-{version}-{tag}.whl"), "w") as whl:
        for path, text in files.items():
            whl.writestr(path, text)


def test_check_wheelhouse_fails_on_a_wheelhouse_that_does_not_install_on_python_3_9(tmp_path):
    """What the image used to ship: the newest click, which needs Python >= 3.10."""
    import platform

    from slabvol import __version__
    fake_wheel(tmp_path, "slabvol", __version__, requires=["click>=7.0", "psutil>=5.0"])
    fake_wheel(tmp_path, "click", "8.3.0", requires_python=">=3.10")
    fake_wheel(tmp_path, "psutil", "7.0.0", requires_python=">=3.6",
               tag=f"cp36-abi3-manylinux_2_17_{platform.machine()}")
    out = subprocess.run([os.path.join(REPO, "scripts", "check-wheelhouse"), "--wheelhouse",
                          str(tmp_path), "3.9", "3.13"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert out.returncode == 1, out
    assert "Python 3.13: ok: click-8.3.0 psutil-7.0.0 slabvol-" in out.stdout  # valid wheels
    assert "Python 3.9: FAILED" in out.stderr
    assert "requires a different Python" in out.stderr and ">=3.10" in out.stderr
    assert "does not install offline on Python 3.9 " in out.stderr


# -- deploy/nfd-values.yaml: Node Feature Discovery's Helm chart, for slabvol's labels ---------
# A values file cannot be schema-checked without the chart; these check what slabvol relies
# on. The key paths were checked against the chart in kubernetes-sigs/node-feature-discovery
# (deployment/helm/node-feature-discovery/values.yaml: master.config, worker.config.core,
# worker.nodeSelector, worker.tolerations).

def nfd_values():
    return yaml.safe_load(read(DEPLOY, "nfd-values.yaml"))


def produced_labels():
    """Every kind of label labels.features can publish, under both cache scopes."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import fakes
    from slabvol import labels
    slabs = [fakes.slab("a", key="repo/with spaces & ü", size_mb=20480, fs="xfs"),
             fakes.slab("b", ns="team-b", last_used=50), fakes.slab("c", key="k", last_used=9)]
    names = set()
    for scope in ("namespace", "node"):
        names |= set(labels.features(fakes.volume_group(), slabs, scope=scope))
    return names


def test_the_nfd_whitelist_admits_every_label_slabvol_publishes_and_no_other():
    config = nfd_values()["master"]["config"]
    # nfd-master matches labelWhiteList against the name without its namespace prefix
    # (pkg/nfd-master/nfd-master.go filterFeatureLabel: MatchString(base)), and Go's
    # MatchString finds a match anywhere: re.search, so the anchors matter.
    whitelist = re.compile(config["labelWhiteList"])
    assert config["labelWhiteList"] == r"^(room-mib|warm-(class|key)-[0-9a-f]{10})$"
    produced = produced_labels()
    assert {n.split("-")[0] for n in produced} >= {"slabvol.io/room", "slabvol.io/warm"}
    assert any("warm-key-" in n for n in produced) and any("warm-class-" in n for n in produced)
    for name in produced:
        namespace, base = name.split("/", 1)
        assert namespace == "slabvol.io" and whitelist.search(base), name
    for base in ("room-mib2", "xroom-mib", "warm-class-0123456789a", "warm-key-012345678",
                 "warm-key-ABCDEF0123", "warm-class-", "cpu-cpuid.AVX512F", "kernel-version.full",
                 "slabvol.io/room-mib", "node"):
        assert not whitelist.search(base), base
    # and only in the slabvol.io namespace: every namespace is denied ("*": nfd-master's
    # preProcessDeniedNamespaces makes it the suffix "", which every namespace has) except
    # the extra one; NFD 0.12 and older need extraLabelNs for any custom namespace anyway
    assert config["denyLabelNs"] == ["*"] and config["extraLabelNs"] == ["slabvol.io"]


def test_the_nfd_worker_runs_where_slabvol_runs_and_labels_from_feature_files_only():
    worker = nfd_values()["worker"]
    core = worker["config"]["core"]
    # the local source (source/local/local.go) reads the feature files; it is a feature
    # source and a label source: both must include it
    assert core["labelSources"] == ["local"] and core["featureSources"] == ["local"]
    assert worker["nodeSelector"] == {"slabvol.io/node": "true"}
    assert {"key": "slabvol.io/node", "operator": "Exists", "effect": "NoSchedule"} in \
        worker["tolerations"]
    # the chart mounts /etc/kubernetes/node-feature-discovery/features.d/ itself
    # (templates/worker.yaml, volume features-d): nothing here may replace its volumes
    assert not {"extraVolumes", "extraVolumeMounts", "volumes"} & set(worker)
    assert nfd_values().get("topologyUpdater", {}).get("enable") in (None, False)
