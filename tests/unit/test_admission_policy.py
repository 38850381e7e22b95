"""The admission policies (deploy/components/admission-policy/, deploy/kyverno-policy.yaml):
pods cannot forge their identity.

The kubelet copies its own ``kubernetes.io/*`` keys (pod namespace, pod uid, ...) into the
driver's options first and the pod's ``flexVolume.options`` over them, so the cluster must
refuse pods whose ``ax/vol_plugin`` volumes set such keys. These tests evaluate the policy's
CEL expressions, read from the YAML file, with a real CEL implementation (the Rust one, from
PyPI common-expression-language) on sample pods and on every example in deploy/examples/;
check that the Kyverno policy carries the same CEL; validate the manifests against the
Kubernetes OpenAPI schemas (kubernetes-validate, strict); and check that the kustomize
component holds the policy. tests/unit/test_kustomize.py renders every overlay with
``kubectl kustomize`` and checks that each applies this policy unchanged. No cluster is
involved: how a real API server or Kyverno applies the policies is not tested here.
"""

import copy
import os
import sys

import kubernetes_validate
import pytest
import yaml

from test_deploy import DEPLOY, EXAMPLE_SPECS, read

DRIVER = "ax/vol_plugin"
POLICY_NAME = "slabvol-no-forged-pod-identity"


POLICY_FILE = os.path.join("components", "admission-policy", "admission-policy.yaml")


def docs(name):
    return [d for d in yaml.safe_load_all(read(DEPLOY, name)) if d]


def vap_documents():
    policy, binding = docs(POLICY_FILE)
    assert policy["kind"] == "ValidatingAdmissionPolicy"
    assert binding["kind"] == "ValidatingAdmissionPolicyBinding"
    return policy, binding


def vap_validation():
    policy, _ = vap_documents()
    (validation,) = policy["spec"]["validations"]
    return validation


def kyverno_validation():
    (policy,) = docs("kyverno-policy.yaml")
    (rule,) = policy["spec"]["rules"]
    (validation,) = rule["validate"]["cel"]["expressions"]
    return validation


# -- a CEL evaluator for the policy --------------------------------------------------------

if sys.version_info >= (3, 11):
    import cel
    from cel.stdlib import add_stdlib_to_context
else:  # pragma: no cover - common-expression-language needs Python 3.11
    cel = None

needs_cel = pytest.mark.skipif(cel is None, reason="the CEL evaluator (common-expression-"
                               "language) needs Python >= 3.11")


class Policy:
    """The policy's validation, compiled once; admit() decides as the API server would.

    The evaluator is the Rust CEL implementation (PyPI common-expression-language), with
    the strings extension (join, ...) that Kubernetes' CEL environment also has. Like
    cel-go it treats ``has(a.b.c)`` with a missing ``a.b`` as an error, which matters: an
    error here is a refused pod, because the policy's failurePolicy is Fail.
    """

    def __init__(self, validation):
        self.expression = cel.compile(validation["expression"])
        self.message_expression = cel.compile(validation["messageExpression"])
        self.message = validation["message"]

    @staticmethod
    def _context(pod):
        context = cel.Context(variables={"object": pod})
        add_stdlib_to_context(context, ["strings"])
        return context

    def verdict(self, pod):
        """True (admitted), False (refused) or the text of an evaluation error."""
        try:
            result = self.expression.execute(self._context(pod))
        except Exception as exc:  # noqa: BLE001 - any evaluation error
            return f"error: {type(exc).__name__}: {exc}"
        return result if isinstance(result, bool) else f"error: not a bool: {result!r}"

    def admit(self, pod):
        """(allowed, message); an evaluation error refuses, as failurePolicy: Fail does."""
        verdict = self.verdict(pod)
        if verdict is True:
            return True, None
        if verdict is not False:
            return False, verdict
        message = self.message_expression.execute(self._context(pod))
        assert isinstance(message, str), message
        return False, message


def pod(*volumes):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ci"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}],
                     **({"volumes": list(volumes)} if volumes else {})}}


def flex(options=None, driver=DRIVER, name="docker-graph-storage"):
    source = {"driver": driver, "fsType": "ext4"}
    if options is not None:
        source["options"] = options
    return {"name": name, "flexVolume": source}


SIZE = {"size_mb": "10240"}
SAMPLES = [  # (id, pod, allowed)
    ("no-volumes", pod(), True),
    ("emptyDir-only", pod({"name": "scratch", "emptyDir": {}}), True),
    ("slab-with-size-and-cache-key", pod(flex({**SIZE, "cache_key": "team-a-build"})), True),
    ("slab-all-driver-options", pod(flex({**SIZE, "ax_vol_type": "ax-docker-graph-storage",
                                          "cache_key": "k"})), True),
    ("forged-pod-namespace", pod(flex({**SIZE, "kubernetes.io/pod.namespace": "team-victim"})),
     False),
    ("forged-pod-uid", pod(flex({**SIZE, "kubernetes.io/pod.uid":
                                 "0c5d5a7e-1111-2222-3333-444455556666"})), False),
    ("forged-secret", pod(flex({**SIZE, "kubernetes.io/secret/x": "c2VjcmV0"})), False),
    ("forged-fsType", pod(flex({**SIZE, "kubernetes.io/fsType": "xfs"})), False),
    ("only-a-forged-key", pod(flex({"kubernetes.io/pod.namespace": "team-victim"})), False),
    ("other-driver-with-kubernetes-io-key",
     pod(flex({"kubernetes.io/pod.namespace": "x"}, driver="example.com/nfs")), True),
    ("slab-without-options", pod(flex(None)), True),
    ("slab-with-empty-options", pod(flex({})), True),
    ("second-volume-forged", pod({"name": "scratch", "emptyDir": {}},
                                 flex(SIZE, name="cache-a"),
                                 flex({**SIZE, "kubernetes.io/pod.namespace": "team-victim"},
                                      name="cache-b")), False),
    ("key-merely-containing-kubernetes-io", pod(flex({**SIZE, "x.kubernetes.io/y": "z"})), True),
]
IDS = [s[0] for s in SAMPLES]


@pytest.fixture(scope="module")
def policy():
    return Policy(vap_validation())


@needs_cel
@pytest.mark.parametrize("name, sample, allowed", SAMPLES, ids=IDS)
def test_the_policy_refuses_exactly_the_pods_that_forge_a_kubernetes_io_option(
        policy, name, sample, allowed):
    assert policy.verdict(sample) is allowed  # a refusal by error would not do either


@needs_cel
def test_the_refusal_names_the_volume_and_the_keys_to_remove_in_one_line(policy):
    sample = pod(flex(SIZE, name="clean-cache"),
                 flex({**SIZE, "kubernetes.io/pod.namespace": "team-victim",
                       "kubernetes.io/pod.uid": "u"}, name="cache-b"))
    allowed, message = policy.admit(sample)
    assert not allowed
    assert "\n" not in message  # the API server discards a message with line breaks
    assert "Remove kubernetes.io/pod.namespace, kubernetes.io/pod.uid from volume cache-b" \
        in message or "Remove kubernetes.io/pod.uid, kubernetes.io/pod.namespace from " \
        "volume cache-b" in message, message
    assert "clean-cache" not in message and "size_mb" not in message
    assert "another namespace" in message
    # the static fallback message: one line too, and it says what to remove
    assert "\n" not in policy.message and "kubernetes.io/" in policy.message


# Small changes to the expression, each of which must change at least one sample's verdict:
# the samples above really pin the expression down.
MUTANTS = {
    "only pod.namespace is refused": ("!k.startsWith('kubernetes.io/')",
                                      "!k.startsWith('kubernetes.io/pod.namespace')"),
    "one clean volume is enough": ("object.spec.volumes.all(v,", "object.spec.volumes.exists(v,"),
    "every driver is checked": ("v.flexVolume.driver != 'ax/vol_plugin' ||", ""),
    "another driver name": ("'ax/vol_plugin'", "'ax~vol_plugin'"),
    "options may be missing": ("!has(v.flexVolume.options) ||", ""),
    "volumes may be missing": ("!has(object.spec.volumes) ||", ""),
    "flexVolume may be missing": ("!has(v.flexVolume) ||", ""),
    "any key is refused": ("!k.startsWith('kubernetes.io/')", "false"),
    "startsWith becomes contains": ("!k.startsWith(", "!k.contains("),
}


@needs_cel
@pytest.mark.parametrize("old, new", MUTANTS.values(), ids=list(MUTANTS))
def test_the_samples_catch_a_changed_expression(old, new):
    validation = dict(vap_validation())
    assert old in validation["expression"], f"mutant {old!r} no longer applies; update it"
    validation["expression"] = validation["expression"].replace(old, new)
    mutant = Policy(validation)
    # an evaluation error counts as a refusal, as it does in the API server (failurePolicy Fail)
    changed = [name for name, sample, allowed in SAMPLES if mutant.admit(sample)[0] is not allowed]
    assert changed, "no sample notices this change of the expression"


@needs_cel
@pytest.mark.parametrize("name, spec", EXAMPLE_SPECS, ids=[n for n, _ in EXAMPLE_SPECS])
def test_the_policy_admits_every_example(policy, name, spec):
    assert any(v.get("flexVolume", {}).get("driver") == DRIVER for v in spec["volumes"])
    allowed, message = policy.admit({"apiVersion": "v1", "kind": "Pod", "spec": spec})
    assert allowed, message


def test_the_kyverno_policy_has_the_same_cel_and_enforces_it_on_pod_creation():
    vap, kyv = vap_validation(), kyverno_validation()
    assert kyv["expression"] == vap["expression"]
    assert kyv["messageExpression"] == vap["messageExpression"]
    assert kyv["message"] == vap["message"] and kyv["reason"] == vap["reason"] == "Forbidden"
    (policy,) = docs("kyverno-policy.yaml")
    assert policy["apiVersion"] == "kyverno.io/v1" and policy["kind"] == "ClusterPolicy"
    assert policy["metadata"]["name"] == POLICY_NAME
    # Enforce at policy level: validate.failureAction does not exist before Kyverno 1.13
    assert policy["spec"]["validationFailureAction"] == "Enforce"
    (rule,) = policy["spec"]["rules"]
    assert "failureAction" not in rule["validate"]
    assert rule["match"] == {"any": [{"resources": {"kinds": ["Pod"], "operations": ["CREATE"]}}]}
    assert "exclude" not in rule and "preconditions" not in rule
    # no autogen rules for Deployments etc.: the pods themselves are checked, as by the VAP
    assert policy["metadata"]["annotations"]["pod-policies.kyverno.io/autogen-controllers"] \
        == "none"


def test_the_binding_denies_in_every_namespace_and_errors_fail_closed():
    policy, binding = vap_documents()
    assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert policy["metadata"]["name"] == binding["spec"]["policyName"] == POLICY_NAME
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert "matchResources" not in binding["spec"] and "paramRef" not in binding["spec"]
    constraints = policy["spec"]["matchConstraints"]
    assert set(constraints) == {"resourceRules"}, "no namespace or object selector"
    (rule,) = constraints["resourceRules"]
    assert rule == {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                    "resources": ["pods"]}
    assert "paramKind" not in policy["spec"] and "matchConditions" not in policy["spec"]


# -- the manifests against the Kubernetes OpenAPI schemas -----------------------------------

LATEST = kubernetes_validate.latest_version()
VERSIONS = ["1.30", LATEST]


def k8s_validate(doc, version):
    """Strict: an unknown field fails too. Short failures (the library's repr is the schema)."""
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        raise AssertionError(f"{doc['kind']} {doc['metadata'].get('name')} is not valid for "
                             f"Kubernetes {version}: {where}: {exc.message}") from None


@pytest.mark.parametrize("version", VERSIONS)
def test_the_manifest_is_valid_for_kubernetes(version):
    for doc in docs(POLICY_FILE):
        k8s_validate(doc, version)


def test_the_schema_check_catches_a_misspelt_field_and_kubernetes_before_1_30():
    policy, binding = vap_documents()
    misspelt = copy.deepcopy(binding)
    misspelt["spec"]["validationAction"] = misspelt["spec"].pop("validationActions")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, "1.30", strict=True)
    # ValidatingAdmissionPolicy v1 is GA since 1.30: older clusters need kyverno-policy.yaml
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(policy, "1.29", strict=True)


def test_the_sample_pods_are_valid_pods():
    for _, sample, _ in SAMPLES:
        k8s_validate(sample, "1.30")


# -- the kustomize component ---------------------------------------------------------------

def test_the_kustomize_component_holds_the_policy_and_not_the_kyverno_one():
    (component,) = docs(os.path.join("components", "admission-policy", "kustomization.yaml"))
    assert component["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    assert component["kind"] == "Component"
    # the Kyverno policy needs Kyverno's CRDs: it is applied by hand, on clusters without VAP
    assert component["resources"] == ["admission-policy.yaml"]
    assert sorted(os.listdir(os.path.join(DEPLOY, "components", "admission-policy"))) == \
        ["admission-policy.yaml", "kustomization.yaml"]
