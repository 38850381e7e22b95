"""Slab state as LVM tags: encoding, decoding, reading an LV, computing tag changes."""

import re

import pytest

from slabvol import slab as S
from slabvol.lvm import LogicalVolume

LVM_TAG = re.compile(r"[A-Za-z0-9_+.\-/=!:#&]+")  # lvm(8), "Tags"


def lv(*tags, name="slab_1", size=1024 ** 3, active=True, major=253, minor=3):
    return LogicalVolume(name, f"/dev/slabvol/{name}", size, tuple(tags), active, major, minor)


VALUES = [
    "plain-text_1.2+3/4:5",
    "/var/lib/kubelet/pods/1234/volumes/ax~vol_plugin/docker",
    "a&b", "&26", "a b  c", "key=value==", "ünïcödé 日本語 🐳", "#!;,'\"\\%", "", "&",
]


@pytest.mark.parametrize("value", VALUES)
def test_encode_then_decode_gives_the_value_back(value):
    assert S.decode(S.encode(value)) == value


@pytest.mark.parametrize("value", VALUES)
def test_a_tag_only_holds_characters_lvm_allows(value):
    tag = S.make_tag("dir", value)
    assert LVM_TAG.fullmatch(tag), tag


def test_plain_characters_are_kept_as_they_are():
    assert S.encode("abc-XYZ_0.9+/:") == "abc-XYZ_0.9+/:"


def test_other_characters_become_lowercase_hex_of_their_utf8_bytes():
    assert S.encode("~") == "&7e"
    assert S.encode("&") == "&26"
    assert S.encode("=") == "&3d"
    assert S.encode(" ") == "&20"
    assert S.encode("é") == "&c3&a9"


def test_an_encoded_value_has_exactly_one_equals_sign_in_its_tag():
    assert S.make_tag("key", "a=b") == "slabvol.key=a&3db"


def test_a_tag_is_namespaced_key_equals_encoded_value():
    assert S.make_tag("dir", "/pods/x~y") == "slabvol.dir=/pods/x&7ey"


def test_from_lv_reads_every_field():
    tags = S.new_tags(state=S.IN_USE, size_mb=1024, fs_type="xfs", type=S.GRAPH,
                      namespace="team a", pod_uid="u-1", mount_dir="/p/ax~vol_plugin/d",
                      cache_key="repo=x&y", last_used=1700000000, use_count=3)
    got = S.Slab.from_lv(lv(*tags))
    assert (got.lv_name, got.lv_path, got.size_bytes, got.device) == (
        "slab_1", "/dev/slabvol/slab_1", 1024 ** 3, (253, 3))
    assert (got.state, got.size_mb, got.fs_type, got.type, got.namespace, got.pod_uid,
            got.mount_dir, got.cache_key, got.last_used, got.use_count) == (
        S.IN_USE, 1024, "xfs", S.GRAPH, "team a", "u-1", "/p/ax~vol_plugin/d", "repo=x&y",
        1700000000, 3)


def test_new_tags_start_with_the_schema_version_and_skip_empty_fields():
    assert S.new_tags(state=S.FREE, namespace="", cache_key=None, use_count=0) == [
        "slabvol.v=1", "slabvol.state=free", "slabvol.uses=0"]


def test_from_lv_ignores_an_lv_without_slabvol_tags():
    assert S.Slab.from_lv(lv("owner=someone-else", "backup")) is None


def test_from_lv_ignores_an_lv_without_a_state_tag():
    assert S.Slab.from_lv(lv("slabvol.v=1", "slabvol.size_mb=10")) is None


def test_from_lv_ignores_foreign_tags_on_a_slab():
    got = S.Slab.from_lv(lv("other.state=broken", "slabvol.state=free", "backup",
                            "slabvolume.ns=x", "slabvol.ns=team-a", "slabvol.novalue"))
    assert (got.state, got.namespace) == (S.FREE, "team-a")
    assert set(got.raw_tags) == {"state", "ns"}


def test_from_lv_skips_an_unreadable_number():
    got = S.Slab.from_lv(lv("slabvol.state=free", "slabvol.uses=many", "slabvol.size_mb=12"))
    assert (got.use_count, got.size_mb) == (0, 12)


def test_from_lv_defaults_to_graph_storage_type():
    assert S.Slab.from_lv(lv("slabvol.state=free")).type == S.GRAPH


def test_an_inactive_lv_has_no_device():
    inactive = lv("slabvol.state=free", active=False, major=None, minor=None)
    assert S.Slab.from_lv(inactive).device is None


def test_retag_deletes_the_old_tag_and_adds_the_new_one():
    slab = S.Slab.from_lv(lv(*S.new_tags(state=S.FREE, namespace="a", use_count=1)))
    assert S.retag(slab, state=S.IN_USE, namespace="b c") == (
        ["slabvol.state=free", "slabvol.ns=a"], ["slabvol.state=in-use", "slabvol.ns=b&20c"])


def test_retag_does_nothing_for_an_unchanged_field():
    slab = S.Slab.from_lv(lv(*S.new_tags(state=S.FREE, namespace="a")))
    assert S.retag(slab, state=S.FREE, namespace="a") == ([], [])


def test_retag_adds_a_field_the_slab_did_not_have():
    slab = S.Slab.from_lv(lv(*S.new_tags(state=S.FREE)))
    assert S.retag(slab, last_used=5) == ([], ["slabvol.last_used=5"])


@pytest.mark.parametrize("empty", [None, ""])
def test_retag_with_none_or_empty_removes_the_field(empty):
    slab = S.Slab.from_lv(lv(*S.new_tags(state=S.IN_USE, pod_uid="u-1")))
    assert S.retag(slab, pod_uid=empty) == (["slabvol.pod=u-1"], [])


def test_retag_of_an_absent_field_to_empty_does_nothing():
    slab = S.Slab.from_lv(lv(*S.new_tags(state=S.FREE)))
    assert S.retag(slab, cache_key="") == ([], [])
