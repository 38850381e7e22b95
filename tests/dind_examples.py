"""The Docker-in-Docker examples of deploy/examples/, read the way the cluster reads them.

Shared by the unit tier (tests/unit/test_deploy.py, tests/unit/test_examples.py) and the
real-LVM tier (tests/lvm/test_dind.py), so that both check the same thing:

- ``pod_specs()``: the pod spec every example ends up as (Groovy, TOML, Helm values and the
  legacy actions-runner-controller CRD unwrapped);
- ``dind_container(spec)``: the container whose /var/lib/docker is the slab;
- ``dockerd_argv(container)``: the dockerd command line the ``docker:dind`` image runs for
  that container, i.e. the container's ``args`` (after Kubernetes' ``$(VAR)`` expansion)
  plus what the image's entrypoint adds;
- ``hosts(argv)``: the API sockets that command line makes dockerd listen on.

The entrypoint model follows docker-library/docker ``dockerd-entrypoint.sh`` (identical in
the 27 and 29 images; the image sets ``ENTRYPOINT ["dockerd-entrypoint.sh"]``, ``CMD []``
and inherits ``ENV DOCKER_TLS_CERTDIR=/certs`` from the cli image):

- no arguments, or a first argument starting with ``-``: it prepends ``dockerd
  --host=<socket> --host=tcp://0.0.0.0:2376 --tlsverify ...`` when ``DOCKER_TLS_CERTDIR``
  is set and non-empty, else ``dockerd --host=<socket> --host=tcp://0.0.0.0:2375``, where
  <socket> is ``$DOCKER_HOST`` if that is a ``unix://`` address, else
  ``unix:///var/run/docker.sock``. So an explicit ``--host=unix://...`` as the first
  argument does NOT stop the TCP listener;
- a first argument ``dockerd``: nothing is added; dockerd gets exactly the arguments.
"""

import os
import re
import sys

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the test extra installs tomli there
    import tomli as tomllib

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
EXAMPLES = os.path.join(REPO, "deploy", "examples")
GRAPH_STORAGE = "/var/lib/docker"

# the files of deploy/examples/, and the example name each one gives
FILES = {
    "dind-pod.yaml": "dind-pod",
    "jenkins/Jenkinsfile": "jenkins",
    "gitlab-runner/config.toml": "gitlab-runner",
    "actions-runner-controller/values.yaml": "actions-runner-controller",
    "actions-runner-controller/runnerdeployment.yaml": "actions-runner-controller-legacy",
}

# ENV of the docker:dind image that matters here (Dockerfile-cli.template, inherited)
DIND_IMAGE_ENV = {"DOCKER_TLS_CERTDIR": "/certs"}


def read(*parts):
    with open(os.path.join(*parts), encoding="utf-8") as handle:
        return handle.read()


# -- the examples as pod specs ---------------------------------------------------------------

def dind_pod():
    pod = yaml.safe_load(read(EXAMPLES, "dind-pod.yaml"))
    assert pod["kind"] == "Pod" and pod["apiVersion"] == "v1"
    return pod["spec"]


def jenkins_pod():
    """The pod YAML inside the Jenkinsfile's podTemplate, as Groovy would render it."""
    text = read(EXAMPLES, "jenkins", "Jenkinsfile")
    match = re.search(r'yaml: """(.*?)"""', text, re.DOTALL)
    assert match, "the Jenkinsfile has a podTemplate yaml: block"
    body = match.group(1).replace("\\$", "$")
    body = re.sub(r"\$\{CACHE_KEY\}", "jenkins-folder-job", body)
    assert "${" not in body, "only ${CACHE_KEY} is interpolated"
    return yaml.safe_load(body)["spec"]


def gitlab_config():
    config = tomllib.loads(read(EXAMPLES, "gitlab-runner", "config.toml"))
    (runner,) = config["runners"]
    assert runner["executor"] == "kubernetes"
    assert "FF_USE_ADVANCED_POD_SPEC_CONFIGURATION=true" in runner["environment"]
    return runner


def gitlab_patch():
    """The pod spec patch of the GitLab example, as written."""
    (patch,) = gitlab_config()["kubernetes"]["pod_spec"]
    assert patch["patch_type"] == "strategic"
    return yaml.safe_load(patch["patch"])


def gitlab_pod():
    """The job pod: the executor's build container (its image, the [[runners]]
    environment as job variables) with the patch merged in (containers, volumes, env and
    volumeMounts keyed by name or mountPath, as a strategic merge patch does)."""
    runner = gitlab_config()
    env = [dict(zip(("name", "value"), e.split("=", 1))) for e in runner["environment"]]
    generated = {"containers": [{"name": "build", "image": runner["kubernetes"]["image"],
                                 "env": env}]}
    return strategic_merge(generated, gitlab_patch())


MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name",
              "env": "name", "volumeMounts": "mountPath"}


def strategic_merge(base, patch):
    out = dict(base)
    for key, value in patch.items():
        if key in MERGE_KEYS and isinstance(value, list):
            merge_key = MERGE_KEYS[key]
            items = [dict(item) for item in out.get(key, [])]
            for item in value:
                match = next((i for i, old in enumerate(items)
                              if old.get(merge_key) == item.get(merge_key)), None)
                if match is None:
                    items.append(item)
                else:
                    items[match] = strategic_merge(items[match], item)
            out[key] = items
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = strategic_merge(out[key], value)
        else:
            out[key] = value
    return out


def arc_values():
    return yaml.safe_load(read(EXAMPLES, "actions-runner-controller", "values.yaml"))


def arc_pod():
    """gha-runner-scale-set with containerMode unset copies template.spec's initContainers,
    containers and volumes as they are (templates/autoscalingrunnerset.yaml)."""
    values = arc_values()
    assert "containerMode" not in values, "containerMode dind would replace our dind container"
    return values["template"]["spec"]


def runner_deployment():
    (doc,) = list(yaml.safe_load_all(read(EXAMPLES, "actions-runner-controller",
                                          "runnerdeployment.yaml")))
    return doc


# What the legacy controller builds around a RunnerDeployment's runner spec when dockerd runs
# in a sidecar (dockerEnabled unset or true, dockerdWithinRunnerContainer unset or false):
# actions/actions-runner-controller controllers/actions.summerwind.net/runner_controller.go,
# newRunnerPodWithContainerMode. The sidecar is named "docker"; when the spec has no
# `containers`, its volumeMounts are spec.dockerVolumeMounts, its env spec.dockerEnv.
LEGACY_DEFAULT_DOCKER_GID = "1001"  # main.go: --docker-gid default
LEGACY_DEFAULT_RUNNER_IMAGE = "summerwind/actions-runner:latest"  # main.go: --runner-image
LEGACY_WORK_DIR = "/runner/_work"


def arc_legacy_pod():
    spec = runner_deployment()["spec"]["template"]["spec"]
    assert not spec.get("dockerdWithinRunnerContainer"), "dockerd must run in the sidecar"
    assert spec.get("dockerEnabled", True) is not False
    assert "containers" not in spec, "with containers set, dockerVolumeMounts is not used"
    runner_image = spec.get("image") or LEGACY_DEFAULT_RUNNER_IMAGE
    docker_env = list(spec.get("dockerEnv", []))
    if not any(e["name"] == "DOCKER_GROUP_GID" for e in docker_env):
        gid = LEGACY_DEFAULT_DOCKER_GID
        if "22.04" in runner_image or "24.04" in runner_image:
            gid = "121"
        docker_env.append({"name": "DOCKER_GROUP_GID", "value": gid})
    docker = {
        "name": "docker",
        "image": "docker:dind",
        # "explicitly invoke `dockerd` to avoid automatic TLS / TCP binding"
        "args": ["dockerd", "--host=unix:///run/docker.sock", "--group=$(DOCKER_GROUP_GID)"],
        "env": docker_env,
        "securityContext": {"privileged": True},
        "volumeMounts": list(spec.get("dockerVolumeMounts", [])) + [
            {"name": "runner", "mountPath": "/runner"},
            {"name": "var-run", "mountPath": "/run"},
            {"name": "work", "mountPath": LEGACY_WORK_DIR}],
    }
    runner = {
        "name": "runner",
        "image": runner_image,
        "env": list(spec.get("env", [])) + [
            {"name": "DOCKER_HOST", "value": "unix:///run/docker.sock"}],
        "volumeMounts": list(spec.get("volumeMounts", [])) + [
            {"name": "runner", "mountPath": "/runner"},
            {"name": "work", "mountPath": LEGACY_WORK_DIR},
            {"name": "var-run", "mountPath": "/run"}],
    }
    volumes = list(spec.get("volumes", [])) + [
        {"name": "runner", "emptyDir": {}},
        {"name": "work", "emptyDir": {}},
        {"name": "var-run", "emptyDir": {"medium": "Memory", "sizeLimit": "1M"}}]
    return {"containers": [runner, docker], "volumes": volumes}


def pod_specs():
    """(example name, pod spec) of every example, in FILES order."""
    builders = {"dind-pod": dind_pod, "jenkins": jenkins_pod, "gitlab-runner": gitlab_pod,
                "actions-runner-controller": arc_pod,
                "actions-runner-controller-legacy": arc_legacy_pod}
    return [(name, builders[name]()) for name in FILES.values()]


# -- the dind container and its daemon ---------------------------------------------------------

def all_containers(spec):
    return list(spec.get("initContainers", [])) + list(spec.get("containers", []))


def slab_volume(spec):
    (volume,) = [v for v in spec["volumes"] if "flexVolume" in v]
    return volume


def dind_container(spec):
    """The one container that mounts the slab."""
    name = slab_volume(spec)["name"]
    (container,) = [c for c in all_containers(spec)
                    if any(m["name"] == name for m in c.get("volumeMounts", []))]
    return container


def container_env(container, base=None):
    """The container's environment as Kubernetes builds it (literal values only)."""
    env = dict(base or {})
    for var in container.get("env", []):
        assert "valueFrom" not in var, f"{var['name']}: only literal values are modelled"
        env[var["name"]] = expand(var.get("value", ""), env)
    return env


def expand(text, env):
    """Kubernetes' $(VAR) expansion in command, args and env values ($$ escapes)."""
    def one(match):
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one, text)


def dockerd_argv(container):
    """The command the docker:dind image runs for this container (see the module doc)."""
    env = container_env(container, DIND_IMAGE_ENV)
    args = [expand(a, env) for a in container.get("args", [])]
    if "command" in container:  # replaces the entrypoint: nothing is added
        argv = [expand(c, env) for c in container["command"]] + args
    elif not args or args[0].startswith("-"):
        socket = env.get("DOCKER_HOST", "")
        if not socket.startswith("unix://"):
            socket = "unix:///var/run/docker.sock"
        certs = env.get("DOCKER_TLS_CERTDIR", "")
        if certs:
            argv = ["dockerd", f"--host={socket}", "--host=tcp://0.0.0.0:2376", "--tlsverify",
                    "--tlscacert", f"{certs}/server/ca.pem",
                    "--tlscert", f"{certs}/server/cert.pem",
                    "--tlskey", f"{certs}/server/key.pem"] + args
        else:
            argv = ["dockerd", f"--host={socket}", "--host=tcp://0.0.0.0:2375"] + args
    else:
        argv = args
    assert argv and os.path.basename(argv[0]) == "dockerd", f"not a dockerd command: {argv}"
    return argv


def hosts(argv):
    """The -H/--host values of a dockerd command line (dockerd's default when none)."""
    found = []
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-H", "--host"):
            found.append(next(args))
        elif arg.startswith("--host="):
            found.append(arg[len("--host="):])
        elif arg.startswith("-H"):
            found.append(arg[2:].lstrip("="))
    return found or ["unix:///var/run/docker.sock"]


def example_daemons():
    """(example name, dockerd argv) of every example."""
    return [(name, dockerd_argv(dind_container(spec))) for name, spec in pod_specs()]


def volume_path(container, path):
    """(volume name, path inside that volume) of a file the container sees at path, or
    (None, path) when no volume is mounted there."""
    best = None
    for mount in container.get("volumeMounts", []):
        root = mount["mountPath"].rstrip("/") or "/"
        if path == root or path.startswith(root.rstrip("/") + "/"):
            if best is None or len(root) > len(best[0]):
                best = (root, mount)
    if best is None:
        return None, path
    root, mount = best
    inside = os.path.normpath(os.path.join("/", mount.get("subPath", ""),
                                           os.path.relpath(path, root)))
    return mount["name"], inside


def docker_host(container):
    """Where the docker CLI in this container connects (DOCKER_HOST, else its default)."""
    return container_env(container).get("DOCKER_HOST") or "unix:///var/run/docker.sock"
