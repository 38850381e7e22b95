"""deploy/examples/: the dind daemons listen on a unix socket only, and the CI examples
follow the layouts of the tools they are written for.

Why no TCP: the docker:dind image's entrypoint (docker-library/docker,
dockerd-entrypoint.sh) adds ``--host=tcp://0.0.0.0:2375`` (``DOCKER_TLS_CERTDIR=""``) or
``:2376`` with TLS unless its first argument is ``dockerd``. Port 2375 is the Docker API
without authentication, i.e. root on the node's dind daemon, for every pod that can reach
the pod IP; and dockerd sleeps 15 s at start for a TCP listener without ``--tlsverify``
on a non-loopback address (moby, daemon/command/daemon.go ``loadListeners``). The
real-LVM tier (tests/lvm/test_dind.py) starts dockerd with each example's flags and
measures both.

tests/dind_examples.py models the entrypoint and unwraps every example; the first tests
here pin that model to what the entrypoint source does.
"""

import json
import os
import re
import shlex
import sys

import pytest
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
import dind_examples  # noqa: E402
from dind_examples import EXAMPLES, FILES, dockerd_argv, hosts, read  # noqa: E402
from slabvol import cli, labels  # noqa: E402

SPECS = dind_examples.pod_specs()
IDS = [name for name, _ in SPECS]
SOCKET = "unix:///run/dind/docker.sock"


def env(**values):
    return [{"name": k, "value": v} for k, v in values.items()]


# -- the docker:dind entrypoint, as dockerd-entrypoint.sh does it ----------------------------

@pytest.mark.parametrize("container, expected", [
    # no args: the image's DOCKER_TLS_CERTDIR=/certs means TLS on 2376, plus the socket
    ({}, ["unix:///var/run/docker.sock", "tcp://0.0.0.0:2376"]),
    # DOCKER_TLS_CERTDIR="" (the old examples): plain HTTP on every address, port 2375
    ({"env": env(DOCKER_TLS_CERTDIR="")},
     ["unix:///var/run/docker.sock", "tcp://0.0.0.0:2375"]),
    # a first argument that is a flag is appended: an explicit unix --host keeps the TCP one
    ({"env": env(DOCKER_TLS_CERTDIR=""), "args": [f"--host={SOCKET}"]},
     ["unix:///var/run/docker.sock", "tcp://0.0.0.0:2375", SOCKET]),
    # a unix DOCKER_HOST only moves the default socket
    ({"env": env(DOCKER_TLS_CERTDIR="", DOCKER_HOST=SOCKET)}, [SOCKET, "tcp://0.0.0.0:2375"]),
    # `dockerd` first: exactly these arguments, nothing added
    ({"args": ["dockerd", f"--host={SOCKET}"]}, [SOCKET]),
    ({"env": env(DOCKER_TLS_CERTDIR=""), "args": ["dockerd"]}, ["unix:///var/run/docker.sock"]),
], ids=["no-args", "tls-off", "flag-args", "unix-docker-host", "dockerd-first", "dockerd-only"])
def test_the_entrypoint_model(container, expected):
    assert hosts(dockerd_argv(container)) == expected


def test_the_entrypoint_model_expands_kubernetes_variables_and_honours_command():
    container = {"args": ["dockerd", "--group=$(GID)", "--label=$$(GID)"], "env": env(GID="123")}
    assert dockerd_argv(container) == ["dockerd", "--group=123", "--label=$(GID)"]
    # `command` replaces the entrypoint, so nothing is added either
    assert dockerd_argv({"command": ["dockerd"], "args": [f"-H={SOCKET}"]}) == \
        ["dockerd", f"-H={SOCKET}"]
    assert hosts(["dockerd", "-H", "unix:///a", "-Hunix:///b", "--host", "unix:///c"]) == \
        ["unix:///a", "unix:///b", "unix:///c"]


# -- every example ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, spec", SPECS, ids=IDS)
def test_the_dind_daemon_listens_on_a_unix_socket_only(name, spec):
    argv = dockerd_argv(dind_examples.dind_container(spec))
    assert argv[0] == "dockerd"
    tcp = [h for h in hosts(argv) if not h.startswith("unix://")]
    assert not tcp, f"{name}: dockerd {' '.join(argv[1:])} listens on {tcp}"
    assert not any(a.startswith(("--tls", "--tlsverify")) for a in argv)


@pytest.mark.parametrize("path", sorted(FILES))
def test_the_example_sets_up_no_tcp_and_says_so_nowhere(path):
    text = read(EXAMPLES, path)
    for word in ("tcp://", "DOCKER_TLS_CERTDIR", "localhost:2375", "plain TCP"):
        assert word not in text, f"{path} mentions {word!r}"


@pytest.mark.parametrize("name, spec", SPECS, ids=IDS)
def test_docker_probes_in_the_dind_container_reach_its_socket(name, spec):
    dind = dind_examples.dind_container(spec)
    daemon = hosts(dockerd_argv(dind))
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = dind.get(kind, {}).get("exec", {}).get("command", [])
        if command[:1] == ["docker"]:
            assert dind_examples.docker_host(dind) in daemon, f"{kind}: {command}"


# -- actions-runner-controller: the gha-runner-scale-set chart -------------------------------
# What the chart renders for containerMode.type "dind" on Kubernetes >= 1.29, as of
# gha-runner-scale-set 0.12.0 to 0.14.2 (actions/actions-runner-controller,
# charts/gha-runner-scale-set/templates/_helpers.tpl: dind-init-container, dind-container,
# dind-runner-container, dind-volume; templates/autoscalingrunnerset.yaml puts dind into
# initContainers). The example writes it out (containerMode unset) to add the slab.
CHART_DIND = {
    "args": ["dockerd", "--host=unix:///var/run/docker.sock", "--group=$(DOCKER_GROUP_GID)"],
    "env": [{"name": "DOCKER_GROUP_GID", "value": "123"}],
    "securityContext": {"privileged": True},
    "restartPolicy": "Always",
    "startupProbe": {"exec": {"command": ["docker", "info"]}, "initialDelaySeconds": 0,
                     "failureThreshold": 24, "periodSeconds": 5},
}
CHART_DIND_MOUNTS = [{"name": "work", "mountPath": "/home/runner/_work"},
                     {"name": "dind-sock", "mountPath": "/var/run"},
                     {"name": "dind-externals", "mountPath": "/home/runner/externals"}]


def test_the_scale_set_runs_dind_as_a_native_sidecar_as_the_current_chart_does():
    values = dind_examples.arc_values()
    assert "containerMode" not in values
    spec = values["template"]["spec"]
    init, dind = spec["initContainers"]
    (runner,) = spec["containers"]
    assert (init["name"], dind["name"], runner["name"]) == ("init-dind-externals", "dind",
                                                            "runner")
    assert init["image"] == runner["image"]
    assert (init["command"], init["args"]) == (["cp"], ["-r", "/home/runner/externals/.",
                                                        "/home/runner/tmpDir/"])
    assert init["volumeMounts"] == [{"name": "dind-externals", "mountPath": "/home/runner/tmpDir"}]
    assert dind["image"].startswith("docker:") and "dind" in dind["image"]
    for key, value in CHART_DIND.items():
        assert dind[key] == value, key
    slab = dind_examples.slab_volume(spec)["name"]
    assert dind["volumeMounts"] == CHART_DIND_MOUNTS + [
        {"name": slab, "mountPath": "/var/lib/docker"}]
    assert runner["command"] == ["/home/runner/run.sh"]
    assert {e["name"]: e["value"] for e in runner["env"]} == {
        "DOCKER_HOST": "unix:///var/run/docker.sock", "RUNNER_WAIT_FOR_DOCKER_IN_SECONDS": "120"}
    assert runner["volumeMounts"] == CHART_DIND_MOUNTS[:2]
    assert {v["name"]: v for v in spec["volumes"] if "emptyDir" in v} == {
        n: {"name": n, "emptyDir": {}} for n in ("work", "dind-sock", "dind-externals")}


# -- actions-runner-controller: the legacy RunnerDeployment ----------------------------------

def test_the_runner_deployment_gives_the_controllers_docker_sidecar_the_slab():
    doc = dind_examples.runner_deployment()
    assert doc["apiVersion"] == "actions.summerwind.dev/v1alpha1"
    assert doc["kind"] == "RunnerDeployment"
    spec = doc["spec"]["template"]["spec"]
    assert spec.get("organization") or spec.get("repository") or spec.get("enterprise")
    # the controller's sidecar (not dockerd inside the runner container) gets the mounts
    assert "dockerdWithinRunnerContainer" not in spec and "dockerEnabled" not in spec
    assert "containers" not in spec and "sidecarContainers" not in spec
    slab = dind_examples.slab_volume(spec)
    assert spec["dockerVolumeMounts"] == [{"name": slab["name"],
                                           "mountPath": "/var/lib/docker"}]
    assert not spec.get("volumeMounts"), "the runner container does not mount the slab"
    # the pod the controller builds: the sidecar runs dockerd on /run/docker.sock only
    pod = dind_examples.arc_legacy_pod()
    docker = dind_examples.dind_container(pod)
    assert docker["name"] == "docker"
    assert dockerd_argv(docker) == ["dockerd", "--host=unix:///run/docker.sock", "--group=1001"]


@pytest.mark.parametrize("name, spec", [
    ("dind-pod", lambda: dind_examples.dind_pod()),
    ("jenkins", lambda: dind_examples.jenkins_pod()),
    ("gitlab-runner", lambda: dind_examples.gitlab_patch()),
    ("actions-runner-controller", lambda: dind_examples.arc_pod()),
    ("runner-deployment", lambda: dind_examples.runner_deployment()["spec"]["template"]["spec"]),
])
def test_the_pods_go_only_to_nodes_where_the_installer_runs(name, spec):
    """deploy/ installs the driver on nodes labelled slabvol.io/node=true only; a dind pod
    elsewhere would wait in ContainerCreating for a driver that is not there."""
    assert spec().get("nodeSelector") == {"slabvol.io/node": "true"}, name


# -- the affinity block: send the job to the node that holds its warm cache ------------------
# Every example shows the pod spec's affinity for its own namespace and flexVolume options
# (a per-repository cache_key), as `vol_plugin affinity` prints it from slabvol.labels, and
# says in a comment the exact command that printed it. Checked here, so that neither can
# drift from the labels the nodes publish.

def example_namespace(name):
    """The namespace the example's pods run in, as the example itself says it."""
    if name == "dind-pod":
        return yaml.safe_load(read(EXAMPLES, "dind-pod.yaml"))["metadata"]["namespace"]
    if name == "jenkins":
        (namespace,) = re.findall(r'podTemplate\((?:.|\n)*?namespace: "([^"]+)"',
                                  read(EXAMPLES, "jenkins", "Jenkinsfile"))
        return namespace
    if name == "gitlab-runner":
        return dind_examples.gitlab_config()["kubernetes"]["namespace"]
    if name == "actions-runner-controller":  # the scale set's runners run in the release's
        (namespace,) = re.findall(r"helm install \S+ -n (\S+)",
                                  read(EXAMPLES, "actions-runner-controller", "values.yaml"))
        return namespace
    return dind_examples.runner_deployment()["metadata"]["namespace"]


def example_pod_spec(name):
    """The pod spec as written in the example (the legacy RunnerDeployment's runner spec:
    the controller copies its affinity into the pod, runner_types.go RunnerPodSpec)."""
    if name == "actions-runner-controller-legacy":
        return dind_examples.runner_deployment()["spec"]["template"]["spec"]
    return dict(SPECS)[name]


def printed_by(path):
    """The `vol_plugin affinity ...` command the example's comment names, as argv."""
    commands = re.findall(r"vol_plugin affinity ([^\n'\"]+)", read(EXAMPLES, path))
    assert len(commands) == 1, f"{path}: one `vol_plugin affinity ...` command in a comment"
    return ["affinity"] + shlex.split(commands[0].split("#")[0].strip().rstrip("\\"))


@pytest.mark.parametrize("path, name", sorted(FILES.items()))
def test_the_example_prefers_the_node_warm_for_its_repository(path, name, capsys):
    spec = example_pod_spec(name)
    source = dind_examples.slab_volume(spec)["flexVolume"]
    namespace, options = example_namespace(name), source["options"]
    size_mb, fs_type, cache_key = options["size_mb"], source["fsType"], options["cache_key"]
    assert cache_key, f"{name}: a per-repository cache_key"
    assert spec["affinity"] == labels.affinity(namespace, size_mb, fs_type, cache_key)
    argv = printed_by(path)
    assert argv == ["affinity", "--namespace", namespace, "--size-mb", size_mb,
                    "--fs-type", fs_type, "--cache-key", cache_key]
    assert cli.main(argv + ["-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"affinity": spec["affinity"]}
    # preferred only: without NFD's labels the pod is scheduled exactly as before
    assert set(spec["affinity"]["nodeAffinity"]) == {
        "preferredDuringSchedulingIgnoredDuringExecution"}
