"""The FlexVolume protocol layer: option parsing and one result dict per kubelet call."""

import json
import re

import pytest

from slabvol import flex
from slabvol import slab as S
from slabvol.driver import Driver as RealDriver
from slabvol.errors import BadRequest
from slabvol.flex import exit_code, handle, parse_options
from slabvol.policy import Request

from fakes import pod_dir, pod_uid

KUBELET_KEYS = {
    "kubernetes.io/fsType": "", "kubernetes.io/readwrite": "rw",
    "kubernetes.io/pvOrVolumeName": "docker", "kubernetes.io/pod.name": "build-1",
    "kubernetes.io/pod.namespace": "team-a", "kubernetes.io/pod.uid": pod_uid("uid-1"),
    "kubernetes.io/serviceAccount.name": "default",
}


def options(**extra):
    values = dict(KUBELET_KEYS, size_mb="1024")
    values.update(extra)
    return json.dumps({k: v for k, v in values.items() if v is not None})


def options_with(key, value):
    values = dict(KUBELET_KEYS, size_mb="1024")
    values[key] = value
    return json.dumps(values)


# -- parse_options ----------------------------------------------------------------------

def test_a_kubelet_request_is_parsed():
    assert parse_options(options(cache_key="repo-x")) == (
        Request(size_mb=1024, fs_type="ext4", type=S.GRAPH, namespace="team-a",
                cache_key="repo-x", pod_uid=pod_uid("uid-1")), False)


def test_missing_size_mb_is_refused():
    with pytest.raises(BadRequest, match="option size_mb is missing"):
        parse_options(options(size_mb=None))


@pytest.mark.parametrize("size", ["ten", "-5", "0", "1.5", "", " 10", "1e3", "0x10", "010",
                                  "99999999999"])
def test_a_size_that_is_not_a_positive_whole_number_is_refused(size):
    with pytest.raises(BadRequest, match=rf"option size_mb={size!r} is not a positive whole "
                                         r"number of MiB"):
        parse_options(options(size_mb=size))


@pytest.mark.parametrize("key, value", [
    ("size_mb", 10), ("size_mb", None), ("size_mb", ["1"]), ("ax_vol_type", 1),
    ("kubernetes.io/fsType", False), ("cache_key", {"a": "b"}),
    ("kubernetes.io/pod.namespace", 5),
])
def test_a_value_that_is_not_a_string_is_refused(key, value):
    with pytest.raises(BadRequest, match=re.escape(f"option {key} must be a string, got "
                                                   f"{json.dumps(value)}")):
        parse_options(options_with(key, value))


def test_an_unknown_volume_type_is_refused():
    with pytest.raises(BadRequest, match="option ax_vol_type='fast' is not one of "
                                         "ax-docker-graph-storage, ax-anonymous"):
        parse_options(options(ax_vol_type="fast"))


@pytest.mark.parametrize("value", [None, ""])
def test_graph_storage_is_the_default_type(value):
    assert parse_options(options(ax_vol_type=value))[0].type == S.GRAPH


def test_an_anonymous_request_drops_its_cache_key():
    request, _ = parse_options(options(ax_vol_type="ax-anonymous", cache_key="repo-x"))
    assert (request.type, request.cache_key) == (S.ANONYMOUS, "")


@pytest.mark.parametrize("fs_type", ["btrfs", "ext3", "EXT4", "ntfs"])
def test_an_unsupported_fs_type_is_refused(fs_type):
    with pytest.raises(BadRequest, match=f"fsType {fs_type!r} is not supported; use one of "
                                         f"ext4, xfs"):
        parse_options(options(**{"kubernetes.io/fsType": fs_type}))


@pytest.mark.parametrize("value", ["", None])
def test_an_empty_or_absent_fs_type_means_ext4(value):
    assert parse_options(options(**{"kubernetes.io/fsType": value}))[0].fs_type == "ext4"


def test_xfs_is_accepted():
    assert parse_options(options(**{"kubernetes.io/fsType": "xfs"}))[0].fs_type == "xfs"


def test_xfs_smaller_than_mkfs_xfs_accepts_is_refused():
    with pytest.raises(BadRequest, match="xfs needs size_mb of at least 300"):
        parse_options(options(size_mb="299", **{"kubernetes.io/fsType": "xfs"}))


@pytest.mark.parametrize("key", ["has space", "x" * 201, "ünï", "tab\there"])
def test_a_bad_cache_key_is_refused(key):
    with pytest.raises(BadRequest, match="option cache_key must be 1 to 200 printable ASCII"):
        parse_options(options(cache_key=key))


def test_a_long_printable_cache_key_is_accepted():
    key = "repo/branch:main#1~" + "x" * 181
    assert parse_options(options(cache_key=key))[0].cache_key == key


@pytest.mark.parametrize("text", ["{", "", "size_mb=10", '{"size_mb": "10",}'])
def test_options_that_are_not_json_are_refused(text):
    with pytest.raises(BadRequest, match="the mount options are not valid JSON"):
        parse_options(text)


@pytest.mark.parametrize("text", ["[]", '"size_mb"', "5", "null", '["size_mb", "10"]'])
def test_options_that_are_not_an_object_are_refused(text):
    with pytest.raises(BadRequest, match="the mount options must be a JSON object"):
        parse_options(text)


@pytest.mark.parametrize("value, readonly", [("ro", True), ("rw", False), (None, False)])
def test_readwrite_ro_means_a_read_only_mount(value, readonly):
    assert parse_options(options(**{"kubernetes.io/readwrite": value}))[1] is readonly


def test_secret_and_unknown_keys_are_ignored():
    text = options(**{"kubernetes.io/secret/token": "s3cr3t", "kubernetes.io/secret/n": None,
                      "kubernetes.io/mounterArgs.FsGroup": "1000", "colour": "blue"})
    plain = parse_options(options())
    assert parse_options(text) == plain


def test_a_secret_that_is_not_a_string_is_ignored_too():
    text = json.dumps(dict(KUBELET_KEYS, size_mb="10",
                           **{"kubernetes.io/secret/blob": {"nested": ["s3cr3t"]}}))
    assert parse_options(text)[0].size_mb == 10


def test_a_refusal_never_echoes_a_secret():
    text = options(size_mb="ten", **{"kubernetes.io/secret/token": "s3cr3t"})
    with pytest.raises(BadRequest) as caught:
        parse_options(text)
    assert "s3cr3t" not in str(caught.value)


# -- handle -----------------------------------------------------------------------------

def test_init_reports_the_exact_capabilities():
    out = handle(["init"])
    assert out == {"status": "Success", "capabilities": {
        "attach": False, "fsGroup": False, "selinuxRelabel": False, "supportsMetrics": True}}
    assert exit_code(out) == 0


@pytest.mark.parametrize("argv", [
    ["attach", "{}", "node"], ["detach", "vol", "node"], ["waitforattach", "/dev/x", "{}"],
    ["isattached", "{}", "node"], ["mountdevice", "/m", "/dev/x", "{}"], ["unmountdevice", "/m"],
    ["getvolumename", "{}"], ["expandvolume", "{}", "10", "5"], ["expandfs", "{}", "/m", "10"],
    ["frobnicate"], ["MOUNT", "/x", "{}"], [],
])
def test_every_other_verb_is_not_supported(argv):
    out = handle(argv)
    assert out["status"] == "Not supported"
    assert exit_code(out) == 1


@pytest.mark.parametrize("argv, usage", [
    (["mount"], "mount takes 2 argument(s), got 0; usage: mount <mount dir> <json options>"),
    (["mount", pod_dir()], "mount takes 2 argument(s), got 1"),
    (["mount", "/a", "{}", "extra"], "mount takes 2 argument(s), got 3"),
    (["unmount"], "unmount takes 1 argument(s), got 0; usage: unmount <mount dir>"),
    (["unmount", "/a", "/b"], "unmount takes 1 argument(s), got 2"),
])
def test_missing_or_extra_arguments_are_a_failure(argv, usage):
    out = handle(argv)
    assert out["status"] == "Failure" and usage in out["message"]
    assert exit_code(out) == 1


@pytest.mark.parametrize("namespace", [
    "", "Team-A", "team_a", "-team", "team-", "a" * 64, "team\x00a", "team\na", "\ud800",
    "t\u00e9am", "kube-system " * 20])
def test_a_namespace_that_is_not_a_dns_label_is_refused(namespace):
    with pytest.raises(BadRequest) as caught:
        parse_options(options_with("kubernetes.io/pod.namespace", namespace))
    message = str(caught.value)
    assert "is not a Kubernetes namespace (a DNS-1123 label of at most 63 characters)" in message
    assert message.isascii() and message.isprintable() and len(message) < 300


def test_the_longest_namespace_is_accepted():
    request, _ = parse_options(options_with("kubernetes.io/pod.namespace", "a" * 63))
    assert request.namespace == "a" * 63


@pytest.mark.parametrize("uid", ["", "uid-1", "8BB3A3E4-53CD-5333-92AB-5309C63D3B78",
                                 "8bb3a3e4-53cd-5333-92ab-5309c63d3b78-x", "8bb3a3e4" * 500,
                                 "../../etc", "\udfff"])
def test_a_pod_uid_that_is_not_a_uuid_is_refused(uid):
    with pytest.raises(BadRequest, match="is not a pod UID"):
        parse_options(options_with("kubernetes.io/pod.uid", uid))


def test_options_without_the_kubelets_identity_are_refused():
    text = json.dumps({"size_mb": "1024"})
    with pytest.raises(BadRequest, match="kubernetes.io/pod.namespace=''"):
        parse_options(text)


@pytest.fixture
def broken_config(fs):
    fs.create_file("/etc/slabvol/slabvol.conf", contents="[slabvol]\nnot ini at all\n")
    return {"SLABVOL_CONFIG": "/etc/slabvol/slabvol.conf"}


@pytest.mark.parametrize("argv", [["mount", pod_dir(), options()], ["unmount", pod_dir()]])
def test_a_broken_config_is_a_failure_naming_the_file(broken_config, argv):
    out = handle(argv, broken_config)
    assert out["status"] == "Failure"
    assert out["message"].startswith("config file /etc/slabvol/slabvol.conf is broken")


@pytest.fixture
def flex_node(node, fs, monkeypatch):
    """handle() with its Driver running on the fake node, config on pyfakefs."""
    import slabvol.driver

    def driver(config):
        return RealDriver(config, runner=node, read_mounts=node.read_mounts, usage=node.usage,
                    clock=lambda: 1, new_name=lambda: "slab_1")
    monkeypatch.setattr(slabvol.driver, "Driver", driver)
    fs.create_file("/etc/slabvol/slabvol.conf", contents="[slabvol]\nlock_file = /run/s.lock\n")
    fs.create_dir(pod_dir())
    return node


def test_mount_through_the_protocol_succeeds_with_a_message(flex_node):
    out = handle(["mount", pod_dir(), options()], {})
    assert out == {"status": "Success", "message": "created slab slab_1"}
    assert flex_node.mounted_at(pod_dir()) is not None


def test_unmount_through_the_protocol_succeeds(flex_node):
    handle(["mount", pod_dir(), options()], {})
    out = handle(["unmount", pod_dir()], {})
    assert out["status"] == "Success" and "slab slab_1 is free" in out["message"]


def test_bad_options_are_a_failure_that_changes_nothing(flex_node):
    out = handle(["mount", pod_dir(), options(size_mb="ten")], {})
    assert out["status"] == "Failure" and "size_mb='ten'" in out["message"]
    assert flex_node.calls == []


def test_a_bad_mount_dir_is_named_before_any_problem_with_the_options(flex_node):
    out = handle(["mount", "/etc/passwd-dir", json.dumps({"size_mb": "64"})], {})
    assert out["status"] == "Failure" and "'/etc/passwd-dir'" in out["message"]
    assert flex_node.calls == []


def test_options_forging_another_pods_uid_fail_before_any_command_runs(flex_node, fs):
    fs.remove("/etc/slabvol/slabvol.conf")
    fs.create_file("/etc/slabvol/slabvol.conf", contents="[slabvol]\nlock_file = /run/s.lock\n"
                   "metrics_file = /var/lib/prom/slabvol.prom\n")
    forged = options_with("kubernetes.io/pod.uid", pod_uid("uid-victim"))
    out = handle(["mount", pod_dir(), forged], {})
    assert out["status"] == "Failure"
    assert "must not set kubernetes.io/ keys" in out["message"]
    assert flex_node.calls == []


def test_a_secret_never_reaches_the_log_or_the_answer(flex_node, fs):
    secret = "s3cr3t-value"
    out = handle(["mount", pod_dir(), options(**{"kubernetes.io/secret/t": secret})], {})
    handle(["mount", pod_dir(), options(size_mb="x", **{"kubernetes.io/secret/t": secret})], {})
    with open("/var/log/slabvol.log", encoding="utf-8") as handle_:
        log_text = handle_.read()
    assert "mount " + pod_dir() in log_text
    assert secret not in log_text and secret not in json.dumps(out)


def test_an_unexpected_exception_is_a_failure_not_a_crash(flex_node, monkeypatch):
    def boom(self, *args):
        raise KeyError("surprise")
    monkeypatch.setattr(RealDriver, "mount", boom)
    out = handle(["mount", pod_dir(), options()], {})
    assert out["status"] == "Failure"
    assert out["message"].startswith("internal error in ax/vol_plugin mount: KeyError")


def test_flex_writes_nothing_itself(capsys):
    handle(["init"])
    handle(["mount"])
    assert capsys.readouterr() == ("", "")


def test_flex_results_are_plain_json():
    out = flex.result("Failure", "why", extra=1)
    assert json.loads(json.dumps(out)) == {"status": "Failure", "message": "why", "extra": 1}
    assert flex.result("Success") == {"status": "Success"}


def test_every_filesystem_in_the_table_is_accepted_from_its_minimum_size():
    from slabvol.filesystems import FILESYSTEMS

    for fs in FILESYSTEMS.values():
        options = {"size_mb": str(fs.min_mb), "kubernetes.io/fsType": fs.name,
                   "kubernetes.io/pod.namespace": "ns", "kubernetes.io/pod.uid": "0" * 32}
        request, _ = flex.parse_options(json.dumps(options))
        assert request.fs_type == fs.name
        if fs.min_mb > 1:
            options["size_mb"] = str(fs.min_mb - 1)
            with pytest.raises(BadRequest, match=f"at least {fs.min_mb}"):
                flex.parse_options(json.dumps(options))
