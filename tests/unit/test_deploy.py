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

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the test extra installs tomli there
    import tomli as tomllib

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
DEPLOY = os.path.join(REPO, "deploy")
EXAMPLES = os.path.join(DEPLOY, "examples")


def read(*parts):
    with open(os.path.join(*parts), encoding="utf-8") as handle:
        return handle.read()


def jenkins_pod():
    """The pod YAML inside the Jenkinsfile's podTemplate, as Groovy would render it."""
    text = read(EXAMPLES, "jenkins", "Jenkinsfile")
    match = re.search(r'yaml: """(.*?)"""', text, re.DOTALL)
    assert match, "the Jenkinsfile has a podTemplate yaml: block"
    body = match.group(1).replace("\\$", "$")
    body = re.sub(r"\$\{CACHE_KEY\}", "jenkins-folder-job", body)
    assert "${" not in body, "only ${CACHE_KEY} is interpolated"
    return yaml.safe_load(body)["spec"]


def gitlab_patch():
    config = tomllib.loads(read(EXAMPLES, "gitlab-runner", "config.toml"))
    runner = config["runners"][0]
    assert runner["executor"] == "kubernetes"
    assert "FF_USE_ADVANCED_POD_SPEC_CONFIGURATION=true" in runner["environment"]
    (patch,) = runner["kubernetes"]["pod_spec"]
    assert patch["patch_type"] == "strategic"
    return yaml.safe_load(patch["patch"])


def pod_specs():
    """(example name, pod spec) of every example."""
    pod = yaml.safe_load(read(EXAMPLES, "dind-pod.yaml"))
    assert pod["kind"] == "Pod" and pod["apiVersion"] == "v1"
    arc = yaml.safe_load(read(EXAMPLES, "actions-runner-controller", "values.yaml"))
    return [("dind-pod", pod["spec"]), ("jenkins", jenkins_pod()),
            ("gitlab-runner", gitlab_patch()), ("actions-runner-controller",
                                                 arc["template"]["spec"])]


EXAMPLE_SPECS = pod_specs()


def test_every_example_file_is_covered():
    found = set()
    for dirpath, _, filenames in os.walk(EXAMPLES):
        found |= {os.path.relpath(os.path.join(dirpath, f), EXAMPLES) for f in filenames}
    assert found == {"dind-pod.yaml", "jenkins/Jenkinsfile", "gitlab-runner/config.toml",
                     "actions-runner-controller/values.yaml"}


@pytest.mark.parametrize("name, spec", EXAMPLE_SPECS, ids=[n for n, _ in EXAMPLE_SPECS])
def test_the_example_mounts_a_slab_at_var_lib_docker_of_a_privileged_dind(name, spec):
    flex = [v for v in spec["volumes"] if "flexVolume" in v]
    assert len(flex) == 1, "one flexVolume"
    volume = flex[0]
    source = volume["flexVolume"]
    assert source["driver"] == DRIVER_NAME == "ax/vol_plugin"
    assert isinstance(source["options"]["size_mb"], str), "options must be strings"
    assert all(isinstance(v, str) for v in source["options"].values())
    daemons = [c for c in spec["containers"]
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
    # what the kubelet passes: the pod's options plus its own kubernetes.io/* keys
    options = dict(source.get("options", {}))
    options.update({"kubernetes.io/fsType": source.get("fsType", ""),
                    "kubernetes.io/readwrite": "rw",
                    "kubernetes.io/pod.namespace": "ci",
                    "kubernetes.io/pod.uid": "0c5d5a7e-1111-2222-3333-444455556666"})
    request, readonly = parse_options(json.dumps(options))
    assert request.size_mb >= 1024 and not readonly


@pytest.mark.parametrize("name, spec", EXAMPLE_SPECS, ids=[n for n, _ in EXAMPLE_SPECS])
def test_the_docker_clients_reach_the_daemon(name, spec):
    env = {e["name"]: e.get("value") for c in spec["containers"] for e in c.get("env", [])}
    if name == "gitlab-runner":  # set for the build container through [[runners]] environment
        config = tomllib.loads(read(EXAMPLES, "gitlab-runner", "config.toml"))
        env.update(e.split("=", 1) for e in config["runners"][0]["environment"])
    assert env.get("DOCKER_HOST") in ("tcp://localhost:2375", "unix:///var/run/docker.sock")
    if env["DOCKER_HOST"].startswith("tcp://"):
        assert env.get("DOCKER_TLS_CERTDIR") == "", "dind listens on 2375 without TLS"


# -- the installer DaemonSet ----------------------------------------------------------------

def daemonset_docs():
    return list(yaml.safe_load_all(read(DEPLOY, "daemonset.yaml")))


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
    assert {"operator": "Exists"} in pod["tolerations"]
    (container,) = pod["containers"]
    assert container["securityContext"]["privileged"] is True
    env = {e["name"]: e.get("value") for e in container["env"]}
    stage = env["SLABVOL_STAGE"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == stage)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["hostPath"]["path"] == stage  # same path in the container and on the host
    assert volume["hostPath"]["type"] == "DirectoryOrCreate"
    # the default arguments are ones install.sh accepts
    from slabvol.install.options import parse_args
    opts = parse_args(shlex.split(env["INSTALL_ARGS"]) + ["--source", REPO], environ={})
    assert opts.loopback and opts.size == 20 * 1024 ** 3


def test_the_entrypoint_runs_install_sh_in_the_host_namespaces_then_sleeps():
    text = read(DEPLOY, "entrypoint.sh")
    assert subprocess.run(["sh", "-n", os.path.join(DEPLOY, "entrypoint.sh")]).returncode == 0
    assert re.search(r'nsenter --target 1 --mount .*-- "\$stage/src/install.sh" \$args', text)
    assert "--wheelhouse $stage/src/wheelhouse" in text
    assert text.rstrip().splitlines()[-1].startswith("exec sleep")
    assert os.access(os.path.join(DEPLOY, "entrypoint.sh"), os.X_OK)


def test_the_dockerfile_copies_files_that_exist_and_runs_the_entrypoint():
    text = read(DEPLOY, "Dockerfile")
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert os.path.exists(os.path.join(REPO, source)), source
    assert "COPY deploy/entrypoint.sh /usr/local/bin/slabvol-installer" in text
    assert 'ENTRYPOINT ["/usr/local/bin/slabvol-installer"]' in text
    # the image's source tree is where the entrypoint copies it from
    assert "cp -a /slabvol/." in read(DEPLOY, "entrypoint.sh")
    assert "COPY install.sh " in text and "/slabvol/" in text
    image = daemonset_docs()[1]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith(":0.1.0") and "slabvol-installer" in image
