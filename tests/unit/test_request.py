"""request.py: one check of a pod's request for every front end (issue 18 item 2).

The FlexVolume options, `vol_plugin affinity` and the CSI volume attributes must refuse
the same requests: each case below goes through all three and must be refused (or
accepted) by each, with the front end's own names in the message."""

import json

import pytest

from slabvol.cli import affinity_block
from slabvol.errors import BadRequest
from slabvol.flex import parse_options
from slabvol.request import Spelling, build, problems

UID = "0b6e5e4a-3f3a-4c1e-9d7a-2f4b1c9d8e7f"
PLAIN = Spelling(option="", names={}, where="the request", identity=None)

# (size_mb, fs_type, cache_key, namespace, the words every refusal has)
BAD = [
    ("0", "ext4", "", "ns", "is not a positive whole number of MiB"),
    ("12x", "ext4", "", "ns", "is not a positive whole number of MiB"),
    ("1024", "btrfs", "", "ns", "is not supported; use one of ext4, xfs"),
    ("299", "xfs", "", "ns", "of at least 300"),
    ("1024", "ext4", "a b", "ns", "must be 1 to 200 printable ASCII characters"),
    ("1024", "ext4", "k" * 201, "ns", "must be 1 to 200 printable ASCII characters"),
    ("1024", "ext4", "", "Team_A", "is not a Kubernetes namespace"),
    ("1024", "ext4", "", "-a", "is not a Kubernetes namespace"),
]
GOOD = [("1024", "ext4", "", "ns"), ("300", "xfs", "acme/app", "team-a"),
        ("1", "", "x", "a" * 63)]


def flex(size, fs, key, ns):
    options = {"size_mb": size, "kubernetes.io/fsType": fs, "kubernetes.io/pod.namespace": ns,
               "kubernetes.io/pod.uid": UID}
    if key:
        options["cache_key"] = key
    return parse_options(json.dumps(options))[0]


def human(size, fs, key, ns):
    import click

    try:
        return affinity_block(ns, int(size) if size.isdigit() else 0, fs or "ext4", key,
                              False, "namespace")
    except click.UsageError as exc:
        raise BadRequest(exc.message) from None


# (click itself refuses a --size-mb that is not a number)
@pytest.mark.parametrize("front, size, fs, key, ns, words", [
    (front, *case) for front in (flex, human) for case in BAD
    if front is flex or case[0].isdigit()])
def test_every_front_end_refuses_the_same_requests(front, size, fs, key, ns, words):
    with pytest.raises(BadRequest, match=words):
        front(size, fs, key, ns)


@pytest.mark.parametrize("size, fs, key, ns", GOOD)
@pytest.mark.parametrize("front", [flex, human])
def test_every_front_end_accepts_the_same_requests(front, size, fs, key, ns):
    assert front(size, fs, key, ns)


def test_the_names_are_the_front_ends_own():
    spelling = Spelling(option="attribute ", names={"fs_type": "fs", "namespace": "NS"},
                        where="the spec", identity="who sent this?")
    found = problems(spelling, "0", fs_type="zfs", cache_key="a b", namespace="X")
    assert found == [
        "attribute size_mb='0' is not a positive whole number of MiB (e.g. \"10240\")",
        "fs 'zfs' is not supported; use one of ext4, xfs",
        "attribute cache_key must be 1 to 200 printable ASCII characters without spaces",
        "NS='X' is not a Kubernetes namespace (a DNS-1123 label of at most 63 characters); "
        "who sent this?",
    ]
    assert problems(spelling, None, namespace="ns") == [
        'attribute size_mb is missing; add e.g. size_mb: "10240" to the spec']


def test_build_fills_the_defaults_and_drops_the_key_of_an_anonymous_volume():
    request = build(PLAIN, "1024", vol_type="ax-anonymous", cache_key="k", namespace="ns",
                    pod_uid=UID)
    assert (request.size_mb, request.fs_type, request.type, request.cache_key) == (
        1024, "ext4", "ax-anonymous", "")
    assert build(PLAIN, "1024", namespace="ns", pod_uid=UID).type == "ax-docker-graph-storage"
    with pytest.raises(BadRequest, match="is not a pod UID"):
        build(PLAIN, "1024", namespace="ns", pod_uid="me")
