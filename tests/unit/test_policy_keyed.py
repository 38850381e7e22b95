"""plan_mount (issue 11): a keyed request keeps other keys' caches while there is room;
an unkeyed request takes unkeyed slabs first. One test per rule; each fails if its rule is
broken."""

import random

import pytest

from slabvol import policy
from slabvol import slab as S

from fakes import slab, volume_group as vg
from slabvol.policy import Create, Refuse, Request, Reuse, plan_mount_recent, plan_mount

MIB = 1024 * 1024


def request(size_mb=1024, fs="ext4", ns="team-a", key="", type=S.GRAPH):
    return Request(size_mb=size_mb, fs_type=fs, namespace=ns, cache_key=key, type=type)


# -- a keyed request ---------------------------------------------------------------------------

def test_1_its_own_key_is_reused_before_a_more_recent_slab_of_another_key():
    own, other = slab("own", key="r", last_used=1), slab("other", key="x", last_used=9)
    assert plan_mount(request(key="r"), vg(free_mb=0), [other, own]) == Reuse(own)


def test_1_among_its_own_key_the_most_recently_used():
    old, new = slab("old", key="r", last_used=1), slab("new", key="r", last_used=2)
    assert plan_mount(request(key="r"), vg(), [old, new]) == Reuse(new)


def test_1_its_own_key_only_where_reuse_is_allowed():
    slabs = [slab("ns", key="r", ns="team-b"), slab("size", key="r", size_mb=2048),
             slab("fs", key="r", fs="xfs"), slab("used", key="r", state=S.IN_USE),
             slab("open", key="r")]
    decision = plan_mount(request(key="r"), vg(), slabs, busy=frozenset({"open"}))
    assert decision == Create(1024 * MIB)


def test_2_with_room_it_creates_rather_than_take_another_keys_cache():
    other = slab("other", key="x")
    unkeyed = slab("unkeyed")
    assert plan_mount(request(key="r"), vg(free_mb=1024), [other, unkeyed]) == \
        Create(1024 * MIB)


def test_3_without_room_it_takes_the_least_recently_used_slab_of_another_key():
    old, new = slab("old", key="x", last_used=1), slab("new", key="y", last_used=2)
    assert plan_mount(request(key="r"), vg(free_mb=0), [new, old]) == Reuse(old)


def test_3_an_unkeyed_slab_counts_as_another_key():
    unkeyed, keyed = slab("unkeyed", last_used=1), slab("keyed", key="x", last_used=2)
    assert plan_mount(request(key="r"), vg(free_mb=0), [keyed, unkeyed]) == \
        Reuse(unkeyed)


def test_3_reuse_comes_before_evicting_anything():
    reusable = slab("reusable", key="x", last_used=5)
    victim = slab("victim", size_mb=2048, last_used=1)  # older, would make room
    assert plan_mount(request(key="r"), vg(free_mb=0), [victim, reusable]) == \
        Reuse(reusable)


def test_4_nothing_reusable_and_no_room_evicts_the_least_recently_used_and_creates():
    old = slab("old", size_mb=1024, last_used=1)
    new = slab("new", size_mb=1024, last_used=2)
    decision = plan_mount(request(size_mb=1024, key="r", ns="team-b"), vg(free_mb=0),
                                [new, old])
    assert decision == Create(1024 * MIB, (old,))


def test_4_only_as_many_victims_as_needed():
    slabs = [slab(f"s{i}", size_mb=512, ns="other", last_used=i) for i in range(4)]
    decision = plan_mount(request(key="r"), vg(free_mb=0), slabs)
    assert decision == Create(1024 * MIB, (slabs[0], slabs[1]))


def test_5_refuses_when_nothing_can_make_room():
    used = slab("used", state=S.IN_USE, size_mb=10240)
    decision = plan_mount(request(key="r"), vg(free_mb=0), [used])
    assert isinstance(decision, Refuse) and "no room" in decision.message


def test_5_refuses_a_slab_larger_than_the_vg():
    decision = plan_mount(request(size_mb=20480, key="r"), vg(), [])
    assert isinstance(decision, Refuse) and "larger than the whole volume group" in \
        decision.message


def test_node_scope_reuses_its_key_from_another_namespace():
    own = slab("own", key="r", ns="team-b", last_used=1)
    other = slab("other", key="x", last_used=2)
    assert plan_mount(request(key="r"), vg(), [other, own],
                            scope=policy.SCOPE_NODE) == Reuse(own)


# -- an unkeyed request -------------------------------------------------------------------------

def test_unkeyed_takes_an_unkeyed_slab_before_a_more_recent_keyed_one():
    unkeyed, keyed = slab("unkeyed", last_used=1), slab("keyed", key="x", last_used=9)
    assert plan_mount(request(), vg(), [keyed, unkeyed]) == Reuse(unkeyed)


def test_unkeyed_among_unkeyed_slabs_the_most_recently_used():
    old, new = slab("old", last_used=1), slab("new", last_used=2)
    assert plan_mount(request(), vg(), [old, new]) == Reuse(new)


def test_unkeyed_takes_a_keyed_slab_when_no_unkeyed_one_is_free_as_today():
    old, new = slab("old", key="x", last_used=1), slab("new", key="y", last_used=2)
    assert plan_mount(request(), vg(), [old, new]) == Reuse(new)
    assert plan_mount_recent(request(), vg(), [old, new]) == Reuse(new)


def test_unkeyed_creates_evicts_and_refuses_as_today():
    assert plan_mount(request(), vg(), []) == Create(1024 * MIB)
    victim = slab("victim", ns="team-b", size_mb=2048)
    assert plan_mount(request(), vg(free_mb=0), [victim]) == \
        Create(1024 * MIB, (victim,))
    assert isinstance(plan_mount(request(), vg(free_mb=0), []), Refuse)


def test_anonymous_is_served_as_today():
    free = slab("free")
    decision = plan_mount(request(type=S.ANONYMOUS), vg(free_mb=0), [free])
    assert decision == plan_mount_recent(request(type=S.ANONYMOUS), vg(free_mb=0), [free])
    assert decision == Create(1024 * MIB, (free,))


def test_where_the_rules_do_not_differ_it_decides_as_plan_mount():
    """No keyed candidate for an unkeyed request, or a keyed request whose own key is free
    or that has room and nothing of its own: the same decision as plan_mount_recent."""
    rng = random.Random(11)
    for _ in range(300):
        slabs = [slab(f"s{i}", state=rng.choice([S.FREE, S.FREE, S.IN_USE]),
                      size_mb=rng.choice([512, 1024]), ns=rng.choice(["team-a", "team-b"]),
                      last_used=rng.randrange(50), key=rng.choice(["", "", "r", "x"]))
                 for i in range(rng.randrange(6))]
        group = vg(free_mb=rng.choice([0, 512, 1024, 4096]))
        req = request(size_mb=rng.choice([512, 1024]), key=rng.choice(["", "r"]))
        mine = [s for s in slabs if policy.reusable(s, req, policy.SCOPE_NAMESPACE, frozenset())]
        keyed_mine = [s for s in mine if s.cache_key]
        own = [s for s in mine if req.cache_key and s.cache_key == req.cache_key]
        same = ((not req.cache_key and not keyed_mine) or own
                or (req.cache_key and not mine))
        if same:
            assert plan_mount(req, group, slabs) == plan_mount_recent(req, group, slabs)


@pytest.mark.parametrize("free_mb", [0, 4096])
def test_never_hands_out_a_slab_in_use_or_open(free_mb):
    slabs = [slab("used", key="r", state=S.IN_USE), slab("open", key="x")]
    for key in ("r", ""):
        decision = plan_mount(request(key=key), vg(free_mb=free_mb), slabs,
                                    busy=frozenset({"open"}))
        assert not isinstance(decision, Reuse)
        if isinstance(decision, Create):
            assert not decision.evict
