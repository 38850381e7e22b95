"""The protocol edge as the kubelet sees it: the real ``vol_plugin`` executable run as a
subprocess (argv list, stdin /dev/null), stdout and stderr captured separately.

Every kubelet verb must print exactly one JSON object on stdout, nothing on stderr, and
exit 0 on Success, 1 otherwise. Nothing here needs LVM or root: the configs point at a
volume group that does not exist, and at a kubelet dir, lock file and log file in tmp_path.
"""

import json
import os
import stat
import subprocess
import sys

import pytest

from slabvol import __version__

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
VOL_PLUGIN = os.path.join(ROOT, "vol_plugin")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "lvm")
POD_UID = "0f8c9d6e-1b2a-4c3d-8e9f-a0b1c2d3e4f5"
OPTIONS = json.dumps({"size_mb": "1024", "kubernetes.io/fsType": "",
                      "kubernetes.io/pod.namespace": "team-a", "kubernetes.io/pod.uid": POD_UID,
                      "kubernetes.io/readwrite": "rw"})


def executable(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def node(tmp_path):
    """A config, kubelet dir and a bin dir holding only ``python3`` (this interpreter)."""
    class Node:
        bin = tmp_path / "bin"
        kubelet = tmp_path / "kubelet"
        config = tmp_path / "etc" / "slabvol.conf"
        log = tmp_path / "log" / "slabvol.log"
        pod = kubelet / "pods" / POD_UID / "volumes" / "ax~vol_plugin" / "docker"

        def run(self, *args, path=None, config=None):
            env = {"PATH": str(self.bin) if path is None else path,
                   "SLABVOL_CONFIG": str(self.config if config is None else config)}
            proc = subprocess.run([VOL_PLUGIN, *args], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                  cwd=str(tmp_path), timeout=60, check=False)
            return proc
    n = Node()
    n.bin.mkdir()
    executable(n.bin / "python3", f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    n.pod.mkdir(parents=True)
    n.config.parent.mkdir()
    n.config.write_text(f"[slabvol]\nvolume_group = nosuchvg\nkubelet_dir = {n.kubelet}\n"
                        f"lock_file = {tmp_path / 'run' / 'slabvol.lock'}\nlog_file = {n.log}\n")
    return n


def answer(proc):
    """The one JSON object on stdout; nothing on stderr; exit code matching the status."""
    assert proc.stderr == b""
    text = proc.stdout.decode()
    assert text.endswith("\n") and text.count("\n") == 1, text
    out = json.loads(text)
    assert isinstance(out, dict)
    assert proc.returncode == (0 if out["status"] == "Success" else 1)
    return out


def test_init_answers_success_with_the_capabilities(node):
    assert answer(node.run("init")) == {"status": "Success", "capabilities": {
        "attach": False, "fsGroup": False, "selinuxRelabel": False, "supportsMetrics": True}}


@pytest.mark.parametrize("verb", ["attach", "getvolumename", "frobnicate"])
def test_an_unsupported_verb_answers_not_supported(node, verb):
    assert answer(node.run(verb, "{}"))["status"] == "Not supported"


@pytest.mark.parametrize("args", [["mount"], ["mount", "/x"], ["unmount"]])
def test_missing_arguments_answer_failure(node, args):
    out = answer(node.run(*args))
    assert out["status"] == "Failure" and "argument(s)" in out["message"]


def test_mount_with_bad_json_answers_failure(node):
    out = answer(node.run("mount", str(node.pod), "{size_mb: 10"))
    assert out["status"] == "Failure" and "not valid JSON" in out["message"]


def test_mount_outside_the_kubelet_dir_answers_failure(node):
    out = answer(node.run("mount", "/etc/kubernetes", OPTIONS))
    assert out["status"] == "Failure" and "is outside" in out["message"]


def test_unmount_of_a_relative_dir_answers_failure(node):
    out = answer(node.run("unmount", "pods/uid-1/volumes/x"))
    assert out["status"] == "Failure" and "is not an absolute path" in out["message"]


def test_a_broken_config_answers_failure_naming_the_file(node):
    node.config.write_text("[slabvol]\nvolume_group\n= = =\n")
    out = answer(node.run("mount", str(node.pod), OPTIONS))
    assert out["status"] == "Failure"
    assert out["message"].startswith(f"config file {node.config} is broken")


def test_a_missing_config_dir_still_answers_the_kubelet(node, tmp_path):
    missing = tmp_path / "no" / "such" / "dir" / "slabvol.conf"
    assert answer(node.run("init", config=missing))["status"] == "Success"
    assert answer(node.run("detach", "x", config=missing))["status"] == "Not supported"
    assert answer(node.run("unmount", config=missing))["status"] == "Failure"


def test_without_lvm_tools_the_failure_names_the_missing_tool(node):
    out = answer(node.run("mount", str(node.pod), OPTIONS))
    assert out["status"] == "Failure"
    assert "`lvm` is not installed on this node; install lvm2" in out["message"]


@pytest.mark.parametrize("args", [["init"], ["mount"], ["frobnicate"]])
def test_with_stdout_closed_the_answer_goes_to_stderr_as_json(args):
    """The kubelet reads stdout and stderr as one stream; with descriptor 1 closed the one
    JSON object must still reach it, not a traceback."""
    proc = subprocess.run(["sh", "-c", 'exec "$0" "$@" 1>&-', VOL_PLUGIN, *args],
                          stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    out = json.loads(proc.stderr.decode())
    assert isinstance(out, dict) and out["status"] in ("Success", "Failure", "Not supported")
    assert proc.returncode == (0 if out["status"] == "Success" else 1)


def test_unmount_of_a_dir_with_nothing_mounted_succeeds_when_lvm_cannot_run(node):
    """The pod must not stay Terminating because the VG (or LVM) is unavailable when
    there is nothing to unmount; gc releases any claim later."""
    out = answer(node.run("unmount", str(node.pod)))
    assert out == {"status": "Success", "message": f"nothing is mounted on {node.pod}"}


def test_a_missing_volume_group_answers_failure_and_child_stderr_stays_hidden(node):
    with open(os.path.join(FIXTURES, "captures.json"), encoding="utf-8") as handle:
        real = next(c for c in json.load(handle) if c["name"] == "fullreport_nosuchvg")
    executable(node.bin / "lvm", f"#!{sys.executable}\nimport sys\n"
                                 f"sys.stdout.write({real['stdout']!r})\n"
                                 f"sys.stderr.write({real['stderr']!r})\n"
                                 f"sys.exit({real['rc']})\n")
    out = answer(node.run("mount", str(node.pod), OPTIONS))
    assert out["status"] == "Failure"
    assert out["message"].startswith("volume group 'nosuchvg' not found on this node")
    assert "mount " + str(node.pod) in node.log.read_text()


@pytest.mark.parametrize("args, torn_down", [(["init"], False), (["unmount", "/x"], False),
                                             (["--version"], True)])
def test_a_kubelet_verb_ends_without_the_interpreters_teardown(node, tmp_path, args,
                                                                torn_down):
    """After the answer, a kubelet verb skips the teardown (atexit handlers, freeing every
    module): a tenth of a call under emulation. A human command ends normally."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        f"import atexit\natexit.register(lambda: open({str(tmp_path / 'torn')!r}, 'w').close())\n")
    env = {"PATH": str(node.bin), "SLABVOL_CONFIG": str(node.config), "PYTHONPATH": str(hooks)}
    proc = subprocess.run([VOL_PLUGIN, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env, timeout=60, check=False)
    if not torn_down:
        assert proc.stderr == b"" and json.loads(proc.stdout)["status"] in ("Success", "Failure")
    assert (tmp_path / "torn").exists() == torn_down


def test_version_prints_the_version(node):
    proc = node.run("--version")
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert proc.stdout.decode() == f"vol_plugin (slabvol), version {__version__}\n"


def test_help_lists_the_human_commands(node):
    proc = node.run("--help")
    assert (proc.returncode, proc.stderr) == (0, b"")
    text = proc.stdout.decode()
    assert text.startswith("Usage: vol_plugin [OPTIONS] COMMAND [ARGS]...")
    assert "status" in text and "gc" in text and "--version" in text


def test_a_human_command_reports_errors_on_stderr(node):
    proc = node.run("status")
    assert proc.returncode == 1 and proc.stdout == b""
    assert proc.stderr.decode().startswith("vol_plugin: `lvm` is not installed on this node")


# -- the installed layout: a virtual environment, and the interpreter run with -S ---------

def test_install_runs_its_own_venv_without_the_site_module_and_a_given_python_with_it(tmp_path):
    """site costs every call a scan of site-packages and its .pth files: the venv install.sh
    builds is run with -S (vol_plugin adds that venv's site-packages itself); an interpreter
    given with --python keeps site, whose layout is not ours to guess."""
    from slabvol.install.runtime import Runtime, render_executable
    venv = render_executable(ROOT, Runtime(python="/opt/slabvol/venvs/v/bin/python",
                                           venv="/opt/slabvol/venvs/v"))
    assert venv.split("\n", 1)[0] == "#!/opt/slabvol/venvs/v/bin/python -S"
    given = render_executable(ROOT, Runtime(python="/usr/bin/python3", ready=True))
    assert given.split("\n", 1)[0] == "#!/usr/bin/python3"
    with open(VOL_PLUGIN, encoding="utf-8") as handle:
        assert venv.split("\n", 1)[1] == given.split("\n", 1)[1] == handle.read().split("\n", 1)[1]


@pytest.fixture
def installed(tmp_path, node):
    """The driver as install.sh lays it out: a virtual environment with slabvol (and click)
    in its site-packages, the executable elsewhere with that venv's python -S as #! line."""
    import shutil

    from slabvol.install.runtime import Runtime, render_executable
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / ("python%d.%d" % sys.version_info[:2]) / "site-packages"
    assert site.is_dir()
    import click
    shutil.copytree(os.path.join(ROOT, "src", "slabvol"), site / "slabvol",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(os.path.dirname(click.__file__), site / "click",
                    ignore=shutil.ignore_patterns("__pycache__"))
    plugin = tmp_path / "plugins" / "ax~vol_plugin" / "vol_plugin"
    plugin.parent.mkdir(parents=True)
    executable(plugin, render_executable(ROOT, Runtime(python=str(venv / "bin" / "python"),
                                                      venv=str(venv))))
    return plugin


def test_the_installed_driver_answers_every_verb_with_python_minus_s(installed, node):
    env = {"PATH": str(node.bin), "SLABVOL_CONFIG": str(node.config)}

    def run(*args):
        return subprocess.run([str(installed), *args], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                              timeout=60, check=False)
    assert answer(run("init"))["status"] == "Success"
    out = answer(run("mount", str(node.pod), OPTIONS))  # as far as LVM: none on PATH here
    assert out["status"] == "Failure" and "is not installed on this node" in out["message"]
    version = run("--version")  # a human command: click, from the venv too
    assert (version.returncode, version.stderr) == (0, b"")
    assert version.stdout.decode() == f"vol_plugin (slabvol), version {__version__}\n"
