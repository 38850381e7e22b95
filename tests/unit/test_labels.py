"""The node labels a node publishes through NFD, and the pod affinity that reads them."""

import json
import re

import pytest

from slabvol import labels as L
from slabvol import policy
from slabvol import slab as S

from fakes import slab, volume_group as vg

MIB = 1024 * 1024

# Kubernetes' own rules (k8s.io/apimachinery validation): a qualified name is an optional
# DNS-1123 subdomain prefix (at most 253) and "/", then a name of at most 63 characters,
# alphanumeric at both ends, [-_.A-Za-z0-9] between; a value is empty or the same.
NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def valid_label(name, value):
    prefix, _, base = name.rpartition("/")
    return (bool(prefix) and len(prefix) <= 253 and bool(SUBDOMAIN.fullmatch(prefix))
            and len(base) <= 63 and bool(NAME.fullmatch(base))
            and len(value) <= 63 and (value == "" or bool(NAME.fullmatch(value))))


def parse(text):
    """The labels NFD's local source makes of a feature file: name=value lines, '#' lines
    skipped (source/local/local.go, parseFeatureFile)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            out[name] = value
    return out


def affinity_keys(aff):
    node = aff["nodeAffinity"]
    terms = [t["preference"] for t in node["preferredDuringSchedulingIgnoredDuringExecution"]]
    terms += node.get("requiredDuringSchedulingIgnoredDuringExecution",
                      {}).get("nodeSelectorTerms", [])
    return [e["key"] for t in terms for e in t["matchExpressions"]]


# -- names, values, size --------------------------------------------------------------------

ODD_KEYS = ["github.com/Acme/Private-Repo", "a" * 200, "x!#$%&'()*+,-./:;<=>?@[]^_`{|}~",
            "k"]


def many_slabs(n):
    return [slab(f"s{i}", size_mb=(1024, 2048, 4096)[i % 3], fs=("ext4", "xfs")[i % 2],
                 ns=f"team-{i % 7}", last_used=i, key=ODD_KEYS[i % 4] + str(i))
            for i in range(n)]


@pytest.mark.parametrize("scope", policy.SCOPES)
def test_every_line_is_a_valid_node_label(scope):
    text = L.feature_file(vg(), many_slabs(40), scope, max_warm=40)
    lines = parse(text)
    assert len(lines) == 41
    for name, value in lines.items():
        assert valid_label(name, value), (name, value)
        assert name.startswith("slabvol.io/")


def test_the_count_is_bounded_whatever_the_number_of_slabs():
    slabs = many_slabs(2000)
    for max_warm in (0, 1, 16, L.MAX_WARM_LIMIT):
        lines = parse(L.feature_file(vg(size_mb=10 ** 7, free_mb=0), slabs, max_warm=max_warm))
        assert len(lines) == max_warm + 1  # the room line is always there
    text = L.feature_file(vg(size_mb=10 ** 7, free_mb=0), slabs, max_warm=L.MAX_WARM_LIMIT)
    assert len(text.encode()) < L.MAX_FEATURE_FILE_BYTES


def test_max_warm_out_of_range_is_refused():
    with pytest.raises(ValueError):
        L.features(vg(), [], max_warm=L.MAX_WARM_LIMIT + 1)
    with pytest.raises(ValueError):
        L.features(vg(), [], max_warm=-1)


def test_the_most_recently_used_slabs_are_the_ones_listed():
    old = slab("old", key="repo-old", last_used=1)
    new = slab("new", key="repo-new", last_used=2, size_mb=2048)
    lines = parse(L.feature_file(vg(), [old, new], max_warm=2))
    assert set(lines) == {L.ROOM, L.key_label("team-a", 2048, "ext4", "repo-new"),
                          L.class_label("team-a", 2048, "ext4")}


def test_a_label_counts_the_free_slabs_it_covers():
    slabs = [slab("a", key="r", last_used=1), slab("b", key="r", last_used=2),
             slab("c", last_used=3)]
    lines = parse(L.feature_file(vg(), slabs))
    assert lines[L.key_label("team-a", 1024, "ext4", "r")] == "2"
    assert lines[L.class_label("team-a", 1024, "ext4")] == "3"


def test_the_file_is_sorted_and_deterministic():
    slabs = many_slabs(30)
    text = L.feature_file(vg(), slabs)
    assert text == L.feature_file(vg(), list(reversed(slabs)))
    names = [line.split("=")[0] for line in text.splitlines() if not line.startswith("#")]
    assert names == sorted(names)
    assert text.endswith("\n")


def test_comments_are_never_nfd_directives_and_an_expiry_is_one():
    text = L.feature_file(vg(), [])
    assert not any(line.startswith("# +") for line in text.splitlines())
    text = L.feature_file(vg(), [], expiry_time="2026-12-01T10:00:00Z")
    assert "# +expiry-time=2026-12-01T10:00:00Z" in text.splitlines()
    with pytest.raises(ValueError):
        L.feature_file(vg(), [], expiry_time="tomorrow")


# -- no names in clear -----------------------------------------------------------------------

def test_no_raw_namespace_or_key_in_the_file_or_the_affinity():
    secret_ns, secret_key = "payroll-team", "git.example.com/payroll/salaries"
    slabs = [slab("a", ns=secret_ns, key=secret_key), slab("b", ns=secret_ns)]
    for scope in policy.SCOPES:
        outputs = [L.feature_file(vg(), slabs, scope),
                   json.dumps(L.affinity(secret_ns, 1024, "ext4", secret_key, True, scope))]
        for text in outputs:
            for secret in (secret_ns, secret_key, "payroll", "salaries"):
                assert secret not in text


# -- the same hashes on both sides -------------------------------------------------------------

@pytest.mark.parametrize("scope", policy.SCOPES)
def test_the_affinity_names_exactly_the_labels_of_a_node_holding_the_cache(scope):
    lines = parse(L.feature_file(vg(), [slab("a", ns="ci", size_mb=2048, fs="xfs",
                                              key="repo")], scope))
    aff = L.affinity("ci", 2048, "xfs", "repo", require_room=True, scope=scope)
    keys = affinity_keys(aff)
    assert set(keys) == set(lines)  # key, class and room: all published, nothing else
    warm = [k for k in keys if k != L.ROOM]
    assert warm == [L.key_label("ci", 2048, "xfs", "repo", scope),
                    L.class_label("ci", 2048, "xfs", scope)]


def test_the_hashes_are_the_documented_ones():
    import hashlib
    expected = hashlib.sha256("\0".join(["slabvol.class.v1", "namespace", "ci", "2048",
                                         "ext4"]).encode()).hexdigest()[:10]
    assert L.class_hash("ci", 2048, "ext4") == expected
    expected = hashlib.sha256("\0".join(["slabvol.key.v1", "node", "", "2048", "ext4",
                                         "repo"]).encode()).hexdigest()[:10]
    assert L.key_hash("anything", 2048, "", "repo", policy.SCOPE_NODE) == expected


def test_a_class_is_what_reuse_matches_on():
    c = L.class_hash
    assert c("a", 1024, "ext4") != c("b", 1024, "ext4")  # namespace scope: per namespace
    assert c("a", 1024, "ext4") != c("a", 2048, "ext4")
    assert c("a", 1024, "ext4") != c("a", 1024, "xfs")
    assert c("a", 1024, "") == c("a", 1024, "ext4")  # "" is ext4, as the driver reads it
    assert c("a", 1024, "ext4", policy.SCOPE_NODE) == c("b", 1024, "ext4", policy.SCOPE_NODE)
    assert c("a", 1024, "ext4", policy.SCOPE_NODE) != c("a", 1024, "ext4")
    k = L.key_hash
    assert k("a", 1024, "ext4", "r") != k("b", 1024, "ext4", "r")
    assert k("a", 1024, "ext4", "r", "node") == k("b", 1024, "ext4", "r", "node")
    assert k("a", 1024, "ext4", "r") != k("a", 2048, "ext4", "r")
    with pytest.raises(ValueError):
        c("a", 1024, "ext4", "cluster")


# -- only what could be handed out now; room ----------------------------------------------------

@pytest.mark.parametrize("other", [
    dict(state=S.IN_USE), dict(state=S.CREATING), dict(state=S.RETIRED),
    dict(type=S.ANONYMOUS),
], ids=["in-use", "creating", "retired", "anonymous"])
def test_a_slab_that_cannot_be_handed_out_is_not_listed(other):
    lines = parse(L.feature_file(vg(), [slab("a", key="r", **other)]))
    assert set(lines) == {L.ROOM}


def test_a_slab_open_outside_the_driver_is_not_listed_and_gives_no_room():
    lines = parse(L.feature_file(vg(free_mb=0), [slab("a", key="r")], busy=frozenset({"a"})))
    assert lines == {L.ROOM: "0"}


def test_a_slab_taken_or_removed_is_no_longer_listed():
    a, b = slab("a", key="r", last_used=1), slab("b", key="r", last_used=2)
    before = parse(L.feature_file(vg(free_mb=0), [a, b]))
    assert before[L.key_label("team-a", 1024, "ext4", "r")] == "2"
    taken = parse(L.feature_file(vg(free_mb=0), [a, b._replace(state=S.IN_USE)]))
    assert taken[L.key_label("team-a", 1024, "ext4", "r")] == "1"
    assert taken[L.ROOM] == "1024"
    removed = parse(L.feature_file(vg(free_mb=1024), [a]))
    assert removed[L.key_label("team-a", 1024, "ext4", "r")] == "1"
    gone = parse(L.feature_file(vg(free_mb=2048), []))
    assert gone == {L.ROOM: "2048"}


def test_room_is_free_space_plus_what_eviction_could_free():
    slabs = [slab("free", size_mb=1024), slab("used", state=S.IN_USE, size_mb=2048),
             slab("retired", state=S.RETIRED, size_mb=512), slab("open", size_mb=256)]
    lines = parse(L.feature_file(vg(free_mb=100), slabs, busy=frozenset({"open"})))
    assert lines[L.ROOM] == "1124"


def test_a_node_with_a_reusable_slab_always_shows_room_for_it():
    lines = parse(L.feature_file(vg(free_mb=0), [slab("a", size_mb=4096)]))
    aff = L.affinity("team-a", 4096, "ext4", require_room=True)
    required = aff["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    (expression,) = required["nodeSelectorTerms"][0]["matchExpressions"]
    assert expression == {"key": L.ROOM, "operator": "Gt", "values": ["4095"]}
    assert int(lines[L.ROOM]) > int(expression["values"][0])


# -- the affinity -------------------------------------------------------------------------------

def test_affinity_weights_rank_key_over_class_over_room():
    aff = L.affinity("ci", 1024, "ext4", "repo")["nodeAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in aff
    terms = aff["preferredDuringSchedulingIgnoredDuringExecution"]
    weights = [t["weight"] for t in terms]
    assert weights == sorted(weights, reverse=True) and len(set(weights)) == 3
    assert all(1 <= w <= 100 for w in weights)
    (room,) = terms[2]["preference"]["matchExpressions"]
    assert room == {"key": L.ROOM, "operator": "Gt", "values": ["1023"]}


def test_affinity_without_a_key_prefers_the_class_then_room():
    aff = L.affinity("ci", 1024)["nodeAffinity"]
    terms = aff["preferredDuringSchedulingIgnoredDuringExecution"]
    assert [t["preference"]["matchExpressions"][0]["key"] for t in terms] == [
        L.class_label("ci", 1024, "ext4"), L.ROOM]


def test_affinity_is_plain_json():
    aff = L.affinity("ci", 1024, "ext4", "repo", require_room=True)
    assert json.loads(json.dumps(aff)) == aff
