"""One LVM report per call on real LVM (issue 10): the installed driver, run by the kubelet
stand-in, with every LVM tool on its PATH wrapped to record its argv before running the
real one. An empty VG costs one report too (a `vgs` with LV fields has no row for it)."""

import os
import shutil

import pytest

TOOLS = ("lvm", "vgs", "lvs", "pvs", "lvcreate", "lvchange", "lvremove", "lvmconfig")


@pytest.fixture
def recorded(tmp_path):
    """(env for the kubelet calls, a function returning the LVM argv lists run so far)."""
    shim, log = tmp_path / "bin", tmp_path / "lvm-calls"
    shim.mkdir()
    for tool in TOOLS:
        real = shutil.which(tool)
        assert real, f"{tool} is not installed"
        (shim / tool).write_text(f'#!/bin/sh\nprintf "%s\\0" {tool} "$@" >> {log}\n'
                                 f'printf "\\n" >> {log}\nexec {real} "$@"\n')
        os.chmod(shim / tool, 0o755)

    def calls():
        if not log.exists():
            return []
        return [line.rstrip("\0").split("\0") for line in log.read_text().splitlines() if line]

    def reset():
        if log.exists():
            log.unlink()
    calls.reset = reset
    return {"PATH": f"{shim}:{os.environ['PATH']}"}, calls


def reports(calls):
    """The reports among them: `lvm fullreport`, and any `vgs`/`lvs` that reads the VG's or
    LVs' fields (not the device scope's `vgs -o pv_name`)."""
    return [argv for argv in calls if argv[:2] == ["lvm", "fullreport"]
            or (argv[0] in ("vgs", "lvs") and "pv_name" not in argv)]


def test_a_mount_on_an_empty_vg_reads_it_once_and_a_hit_and_an_unmount_too(
        node, kubelet, pod_factory, recorded):
    env, calls = recorded
    assert node.lvs() == []
    a, b = pod_factory(), pod_factory()
    call = kubelet.mount(a, env=env, size_mb="64")
    assert call.status == "Success" and "created" in call.message, call.output
    miss = calls()
    assert [argv[:2] for argv in reports(miss)] == [["lvm", "fullreport"]], miss
    assert [argv[0] for argv in miss if argv not in reports(miss)
            and argv[0] != "lvm" and argv[0] != "lvmconfig" and "pv_name" not in argv] == [
        "lvcreate", "lvchange"], miss

    for step in (lambda: kubelet.unmount(a, env=env),
                 lambda: kubelet.mount(b, env=env, size_mb="64"),
                 lambda: kubelet.unmount(b, env=env)):
        calls.reset()
        assert step().status == "Success"
        assert [argv[:2] for argv in reports(calls())] == [["lvm", "fullreport"]], calls()
        assert [argv[0] for argv in calls() if argv not in reports(calls())
                and "pv_name" not in argv and argv[0] not in ("lvm", "lvmconfig")] == [
            "lvchange"], calls()
