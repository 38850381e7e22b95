"""The human commands (status, gc) in-process, on the fake node."""

import json

import pytest

from slabvol import cli
from slabvol import slab as S

from fakes import CLOCK, claimed_slab, free_slab, make_driver, pod_dir


@pytest.fixture
def human(node, config, monkeypatch):
    """cli.main with its Driver on the fake node."""
    monkeypatch.setattr(cli, "_driver", lambda: (config, make_driver(node, config)))
    return node


def test_status_json_has_the_documented_shape(human, capsys):
    free_slab(human, "slab_a", key="repo-x", last_used=CLOCK)
    assert cli.main(["status", "--json"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert err == ""
    assert data["volume_group"] == {"name": "slabvol", "size_mb": 10240, "free_mb": 9216}
    assert data["slabs"] == [{
        "lv_name": "slab_a", "size_mb": 1024, "fs_type": "ext4", "state": "free",
        "namespace": "team-a", "pod_uid": "", "mount_dir": "", "used_percent": None,
        "last_used": CLOCK, "use_count": 1, "cache_key": "repo-x",
        "type": "ax-docker-graph-storage", "open": False}]


def test_status_prints_a_table(human, capsys):
    free_slab(human, "slab_a", key="repo-x", last_used=CLOCK)
    claimed_slab(human, "slab_b", pod_dir("uid-2"), type=S.ANONYMOUS)
    assert cli.main(["status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "volume group slabvol: 10240 MiB, 8192 MiB free, 2 slab(s)"
    assert lines[1].split() == ["SLAB", "SIZE_MB", "FS", "STATE", "NAMESPACE", "POD", "USED",
                                "LAST_USED", "USES", "CACHE_KEY", "TYPE"]
    assert lines[2].split() == ["slab_a", "1024", "ext4", "free", "team-a", "-", "-",
                                "2023-11-14", "22:13", "1", "repo-x", "graph"]
    assert lines[3].split()[:4] == ["slab_b", "1024", "ext4", "in-use"]
    assert lines[3].split()[-1] == "anonymous"


def test_gc_prints_what_it_changed(human, capsys):
    claimed_slab(human, "slab_a", pod_dir("uid-gone"))
    assert cli.main(["gc"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("free   slab_a: pod dir ") and "returned to the pool" in out[0]
    assert out[1] == "gc: 1 slab(s) repaired, 0 failed, 0 retired but still held"


def test_gc_reports_each_slab_it_could_not_repair_and_exits_1(human, capsys):
    claimed_slab(human, "slab_a", pod_dir("uid-gone"), type=S.ANONYMOUS)
    claimed_slab(human, "slab_b", pod_dir("uid-gone2"))
    held = claimed_slab(human, "slab_c", "", state=S.RETIRED)
    held.held = True
    human.failures["lvremove"] = (5, "  Logical volume slabvol/slab_a contains a filesystem "
                                     "in use.\n")
    assert cli.main(["gc"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("free   slab_b: pod dir ")
    assert out[1] == ("FAILED slab_a: could not remove it (anonymous slab of a pod that is "
                      "gone): `lvremove --config 'backup { retain_min = 20 retain_days = 0 }' --yes "
                      "slabvol/slab_a` failed with exit code 5: "
                      "Logical volume slabvol/slab_a contains a filesystem in use.")
    assert out[2].startswith("held   slab_c: retired, but still open outside the driver; "
                             "find the holder with `grep -l ' 254:2 ' /proc/*/mountinfo`")
    assert out[3] == "gc: 1 slab(s) repaired, 1 failed, 1 retired but still held"


def test_gc_rewrites_the_metrics_file(node, config, monkeypatch, capsys, fs):
    """After a reboot the slabs of vanished pods are free again; the metrics must say so
    without waiting for the next mount."""
    config = config._replace(metrics_file="/var/lib/node_exporter/textfile_collector/s.prom")
    monkeypatch.setattr(cli, "_driver", lambda: (config, make_driver(node, config)))
    fs.create_dir("/var/lib/node_exporter/textfile_collector")
    claimed_slab(node, "slab_a", pod_dir("uid-gone"))
    assert cli.main(["gc"]) == 0
    with open(config.metrics_file, encoding="utf-8") as handle:
        text = handle.read()
    assert 'slabvol_slabs{vg="slabvol",state="free"} 1' in text
    assert 'slabvol_slabs{vg="slabvol",state="in-use"} 0' in text


def test_a_human_command_error_goes_to_stderr_with_exit_1(human, capsys):
    human.missing_vg = True
    assert cli.main(["status"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("vol_plugin: volume group 'slabvol' not found on this node")


def test_an_unknown_option_is_a_usage_error(human, capsys):
    assert cli.main(["status", "--bogus"]) == 2
    assert "No such option" in capsys.readouterr().err


# -- affinity ---------------------------------------------------------------------------

def affinity(capsys, *args):
    code = cli.main(["affinity", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_affinity_prints_yaml_of_exactly_labels_affinity(capsys, monkeypatch):
    import yaml

    from slabvol import labels

    monkeypatch.setattr(cli, "_driver", lambda: pytest.fail("affinity must not need LVM"))
    code, out, err = affinity(capsys, "--namespace", "team-a", "--size-mb", "10240",
                              "--cache-key", "github.com/org/repo", "--require-room")
    assert (code, err) == (0, "")
    assert yaml.safe_load(out) == {"affinity": labels.affinity(
        "team-a", 10240, "ext4", "github.com/org/repo", require_room=True)}


def test_affinity_json_for_xfs_node_scope_without_a_key(capsys):
    from slabvol import labels

    code, out, _ = affinity(capsys, "--namespace", "team-a", "--size-mb", "4096", "--fs-type",
                            "xfs", "--scope", "node", "-o", "json")
    assert code == 0
    assert json.loads(out) == {"affinity": labels.affinity("team-a", 4096, "xfs", "",
                                                           scope="node")}


def test_affinity_names_the_labels_a_node_warm_for_that_key_publishes(human, capsys):
    free_slab(human, "warm", key="github.com/org/repo", last_used=CLOCK)
    assert cli.main(["status", "--json"]) == 0
    published = json.loads(capsys.readouterr().out)["node_labels"]
    code, out, _ = affinity(capsys, "--namespace", "team-a", "--size-mb", "1024",
                            "--cache-key", "github.com/org/repo", "-o", "json")
    terms = json.loads(out)["affinity"]["nodeAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    keys = [t["preference"]["matchExpressions"][0]["key"] for t in terms]
    assert keys[0] in published and keys[1] in published  # warm for the key, for the class
    assert int(published[keys[2]]) > 1023  # room


@pytest.mark.parametrize("args, message", [
    (["--namespace", "Team_A", "--size-mb", "1024"], "not a Kubernetes namespace"),
    (["--namespace", "a", "--size-mb", "0"], "not a positive whole number"),
    (["--namespace", "a", "--size-mb", "1024", "--fs-type", "btrfs"], "not supported; use one of ext4, xfs"),
    (["--namespace", "a", "--size-mb", "200", "--fs-type", "xfs"], "at least 300"),
    (["--namespace", "a", "--size-mb", "1024", "--cache-key", "a b"], "printable ASCII"),
    (["--namespace", "a", "--size-mb", "1024", "--scope", "cluster"], "not one of namespace"),
    (["--size-mb", "1024"], "Missing option '--namespace'"),
])
def test_affinity_refuses_what_the_driver_would_refuse(capsys, args, message):
    code, out, err = affinity(capsys, *args)
    assert code == 2 and out == ""
    assert message in err


def test_status_says_who_holds_the_node_lock(human, config, capsys, monkeypatch):
    from slabvol import lock

    state = {"holder": {"pid": 4242, "command": "vol_plugin mount /x", "running_s": 75.0},
             "waiting": [{"pid": 4343, "command": "vol_plugin mount /y", "running_s": 2.0}]}
    monkeypatch.setattr(lock, "lock_state", lambda path: state if path == config.lock_file
                        else None)
    assert cli.main(["status"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "node lock: held by pid 4242 (vol_plugin mount /x, running for 75 s); 1 waiting: "
        "pid 4343 (vol_plugin mount /y)")
    assert cli.main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["lock"] == state
