"""The pure slab policy: which slab a pod gets, what is evicted, what release and gc do."""

import pytest

from slabvol import policy
from slabvol import slab as S

from fakes import slab, volume_group as vg
from slabvol.policy import Create, Refuse, Request, Reuse, lv_bytes, plan_mount

MIB = 1024 * 1024
EXTENT = 4 * MIB


def request(size_mb=1024, fs="ext4", ns="team-a", key="", type=S.GRAPH):
    return Request(size_mb=size_mb, fs_type=fs, namespace=ns, cache_key=key, type=type)


# -- reuse ------------------------------------------------------------------------------

def test_a_free_slab_of_the_same_size_fs_and_namespace_is_reused():
    free = slab("a")
    assert plan_mount(request(), vg(), [free]) == Reuse(free)


def test_an_empty_vg_leads_to_create():
    assert plan_mount(request(1024), vg(), []) == Create(1024 * MIB)


@pytest.mark.parametrize("other", [
    dict(size_mb=2048), dict(fs="xfs"), dict(state=S.IN_USE), dict(state=S.CREATING),
    dict(type=S.ANONYMOUS),
], ids=["other-size", "other-fs", "in-use", "creating", "anonymous"])
def test_a_slab_that_does_not_match_exactly_is_not_reused(other):
    decision = plan_mount(request(1024, "ext4"), vg(), [slab("a", **other)])
    assert isinstance(decision, Create)


def test_a_free_slab_that_the_mount_table_shows_mounted_is_not_reused():
    decision = plan_mount(request(), vg(), [slab("a")], busy=frozenset({"a"}))
    assert isinstance(decision, Create)


def test_an_anonymous_request_never_reuses_a_free_slab():
    decision = plan_mount(request(type=S.ANONYMOUS), vg(), [slab("a")])
    assert decision == Create(1024 * MIB)


def test_namespace_scope_does_not_reuse_another_namespaces_slab():
    decision = plan_mount(request(ns="team-b"), vg(), [slab("a", ns="team-a")],
                          scope=policy.SCOPE_NAMESPACE)
    assert isinstance(decision, Create)


def test_namespace_scope_is_the_default():
    decision = plan_mount(request(ns="team-b"), vg(), [slab("a", ns="team-a")])
    assert isinstance(decision, Create)


def test_node_scope_reuses_another_namespaces_slab():
    other = slab("a", ns="team-a")
    assert plan_mount(request(ns="team-b"), vg(), [other], scope=policy.SCOPE_NODE) == Reuse(other)


def test_node_scope_still_requires_the_exact_size():
    decision = plan_mount(request(ns="team-b"), vg(), [slab("a", ns="team-a", size_mb=2048)],
                          scope=policy.SCOPE_NODE)
    assert isinstance(decision, Create)


def test_the_same_cache_key_is_preferred_over_a_more_recent_slab():
    mine = slab("mine", key="repo-x", last_used=100)
    newer = slab("newer", key="repo-y", last_used=900)
    assert plan_mount(request(key="repo-x"), vg(), [newer, mine]) == Reuse(mine)


def test_the_baseline_policy_hands_another_keys_most_recent_slab_even_with_room():
    old = slab("old", key="repo-y", last_used=100)
    new = slab("new", key="repo-z", last_used=900)
    assert policy.plan_mount_recent(request(key="repo-x"), vg(), [old, new]) == Reuse(new)
    assert plan_mount(request(key="repo-x"), vg(), [old, new]) == Create(1024 * MIB)


def test_without_a_cache_key_the_most_recently_used_slab_wins():
    old, new = slab("old", last_used=100), slab("new", last_used=900)
    never = slab("never", last_used=None)
    assert plan_mount(request(), vg(), [old, never, new]) == Reuse(new)


def test_among_same_key_slabs_the_most_recently_used_wins():
    old = slab("old", key="k", last_used=100)
    new = slab("new", key="k", last_used=900)
    other = slab("other", key="j", last_used=5000)
    assert plan_mount(request(key="k"), vg(), [old, other, new]) == Reuse(new)


# -- create, evict, refuse --------------------------------------------------------------

@pytest.mark.parametrize("size_mb, expected", [
    (4, 4 * MIB), (1, 4 * MIB), (5, 8 * MIB), (1024, 1024 * MIB), (1025, 1028 * MIB)])
def test_lv_bytes_rounds_up_to_whole_extents(size_mb, expected):
    assert lv_bytes(size_mb, EXTENT) == expected


def test_create_asks_for_the_extent_rounded_size():
    assert plan_mount(request(size_mb=10), vg(), []) == Create(12 * MIB)


def test_create_fits_exactly_into_the_free_space():
    assert plan_mount(request(1024), vg(free_mb=1024), []) == Create(1024 * MIB)


def test_a_request_larger_than_the_whole_vg_is_refused_without_evicting():
    decision = plan_mount(request(20000), vg(size_mb=10240, free_mb=0),
                          [slab("a", size_mb=10240, last_used=1)])
    assert isinstance(decision, Refuse)
    assert "size_mb=20000" in decision.message
    assert "larger than the whole volume group 'slabvol' (10240 MiB)" in decision.message


def test_eviction_removes_only_as_many_lru_free_slabs_as_needed():
    slabs = [slab("newest", size_mb=2048, last_used=300),
             slab("oldest", size_mb=2048, last_used=100),
             slab("middle", size_mb=2048, last_used=200)]
    decision = plan_mount(request(3072), vg(size_mb=6144, free_mb=0), slabs)
    assert decision == Create(3072 * MIB, (slabs[1], slabs[2]))


def test_eviction_counts_the_free_space_already_there():
    slabs = [slab("old", size_mb=1024, last_used=100), slab("new", size_mb=1024, last_used=200)]
    decision = plan_mount(request(1536), vg(size_mb=3072, free_mb=1024), slabs)
    assert decision == Create(1536 * MIB, (slabs[0],))


def test_a_never_used_free_slab_is_evicted_first():
    slabs = [slab("used", size_mb=1024, last_used=100), slab("never", size_mb=1024, last_used=None)]
    decision = plan_mount(request(1024, fs="xfs"), vg(size_mb=2048, free_mb=0), slabs)
    assert decision == Create(1024 * MIB, (slabs[1],))


def test_eviction_never_touches_in_use_creating_or_mounted_slabs():
    slabs = [slab("used", state=S.IN_USE, last_used=1), slab("half", state=S.CREATING, last_used=1),
             slab("mounted", last_used=1), slab("free", last_used=500)]
    decision = plan_mount(request(1024, fs="xfs"), vg(size_mb=4096, free_mb=0), slabs,
                          busy=frozenset({"mounted"}))
    assert decision == Create(1024 * MIB, (slabs[3],))


def test_nothing_is_evicted_when_evicting_would_not_make_room():
    slabs = [slab("used", state=S.IN_USE, size_mb=3072), slab("free", size_mb=512)]
    decision = plan_mount(request(2048, fs="xfs"), vg(size_mb=4096, free_mb=512), slabs)
    assert isinstance(decision, Refuse)


def test_the_refusal_says_how_much_was_asked_is_free_and_is_in_use():
    slabs = [slab("used", state=S.IN_USE, size_mb=3000),
             slab("half", state=S.CREATING, size_mb=100), slab("free", size_mb=500)]
    decision = plan_mount(request(2048), vg(size_mb=4096, free_mb=496), slabs)
    assert isinstance(decision, Refuse)
    assert "no room for a 2048 MiB slab in volume group 'slabvol'" in decision.message
    assert "496 MiB free" in decision.message
    assert "3100 MiB held by slabs in use" in decision.message
    assert "500 MiB in free slabs that could be evicted" in decision.message


def test_a_request_that_fits_never_evicts():
    free = slab("free", size_mb=512)
    assert plan_mount(request(1024), vg(free_mb=2048), [free]) == Create(1024 * MIB)


# -- release ----------------------------------------------------------------------------

def test_release_removes_an_anonymous_slab_whatever_its_usage():
    action, reason = policy.plan_release(slab("a", type=S.ANONYMOUS), 1.0, 50)
    assert action == policy.REMOVE and "anonymous" in reason


def test_release_keeps_a_slab_whose_usage_cannot_be_read():
    action, reason = policy.plan_release(slab("a"), None, 50)
    assert action == policy.KEEP and "could not be read" in reason


def test_release_removes_a_slab_above_the_prune_threshold():
    action, reason = policy.plan_release(slab("a"), 50.1, 50)
    assert action == policy.REMOVE
    assert "50.1% used is above prune_used_percent=50" in reason


@pytest.mark.parametrize("used", [0.0, 12.5, 50.0])
def test_release_keeps_a_slab_at_or_below_the_prune_threshold(used):
    assert policy.plan_release(slab("a"), used, 50)[0] == policy.KEEP


# -- repair -----------------------------------------------------------------------------

def actions(repairs):
    return {r.slab.lv_name: r.action for r in repairs}


def test_repair_removes_a_half_created_slab():
    assert actions(policy.plan_repair([slab("a", state=S.CREATING)], frozenset(), set())) == {
        "a": policy.REMOVE}


def test_repair_returns_an_in_use_slab_of_a_vanished_pod_to_the_pool():
    orphan = slab("a", state=S.IN_USE, mount_dir="/var/lib/kubelet/pods/gone/v")
    assert actions(policy.plan_repair([orphan], frozenset(), set())) == {"a": policy.KEEP}


def test_repair_removes_an_anonymous_slab_of_a_vanished_pod():
    orphan = slab("a", state=S.IN_USE, type=S.ANONYMOUS, mount_dir="/var/lib/kubelet/pods/gone/v")
    assert actions(policy.plan_repair([orphan], frozenset(), set())) == {"a": policy.REMOVE}


def test_repair_removes_a_free_anonymous_slab():
    assert actions(policy.plan_repair([slab("a", type=S.ANONYMOUS)], frozenset(), set())) == {
        "a": policy.REMOVE}


def test_repair_leaves_free_graph_slabs_alone():
    assert policy.plan_repair([slab("a")], frozenset(), set()) == []


def test_repair_never_touches_a_mounted_slab():
    slabs = [slab("creating", state=S.CREATING), slab("anon", type=S.ANONYMOUS),
             slab("orphan", state=S.IN_USE, mount_dir="/gone")]
    assert policy.plan_repair(slabs, frozenset({"creating", "anon", "orphan"}), set()) == []


def test_repair_leaves_a_claim_whose_pod_dir_still_exists():
    live = slab("a", state=S.IN_USE, mount_dir="/var/lib/kubelet/pods/p/v")
    assert policy.plan_repair([live], frozenset(), {"/var/lib/kubelet/pods/p/v"}) == []
