"""The kubelet starts a new process for every call, so what a kubelet verb imports is paid on
every mount and unmount (issue 10). These tests run the verbs in a fresh interpreter and
look at ``sys.modules`` afterwards: nothing that only the human commands need (click), and
none of the heavy standard modules the driver does without.

Which modules are absent is checked, never how long anything takes (bench/ measures that).
"""

import json
import os
import subprocess
import sys

from fakes import pod_uid

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, os.pardir, os.pardir, "src"))

# A fresh interpreter (-S: no site-packages, so nothing but slabvol and the fake node is
# imported) runs the verbs through cli.main and writes sys.modules to a file (cli.main
# points descriptors 1 and 2 at /dev/null while a verb runs).
HARNESS = r"""
import builtins, json, sys
src, unit, out, config = sys.argv[1:5]
calls = json.loads(sys.argv[5])
# Every import statement, cached or not, as an edge importer -> imported: what slabvol needs
# is what its own modules reach through these edges, whoever imported a module first (the
# fake node below imports modules of its own).
edges = set()
real_import = builtins.__import__
def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    module = real_import(name, globals, locals, fromlist, level)
    importer = (globals or {}).get("__name__", "")
    if level:
        package = (globals or {}).get("__package__") or ""
        base = package.rsplit(".", level - 1)[0] if level > 1 else package
        name = f"{base}.{name}" if name else base
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        edges.add((importer, ".".join(parts[:i])))
    for item in fromlist or ():
        if f"{name}.{item}" in sys.modules:
            edges.add((importer, f"{name}.{item}"))
    return module
builtins.__import__ = recording_import
sys.path[:0] = [src, unit]
import os
os.environ["SLABVOL_CONFIG"] = config
if calls[0][0] != "init":
    import fakes
    from slabvol import driver
    node = fakes.FakeNode()
    fakes.free_slab(node, "slab_1", size_mb=1024, ns="team-a")
    real = driver.Driver
    def fake_driver(config):
        driver.Driver = real  # (make_driver builds the real one)
        try:
            return fakes.make_driver(node, config)
        finally:
            driver.Driver = fake_driver
    driver.Driver = fake_driver  # flex takes it from here
from slabvol.cli import main
codes = [main(argv) for argv in calls]
reached = {m for m in sys.modules if m.startswith("slabvol")}
todo = list(reached)
while todo:
    importer = todo.pop()
    for source, target in edges:
        if source == importer and target not in reached:
            reached.add(target)
            todo.append(target)
with open(out, "w") as handle:
    json.dump({"codes": codes, "modules": sorted(reached & set(sys.modules))}, handle)
"""

# Never on the kubelet verbs' path: the CLI toolkit, and the standard modules that
# logging.handlers (socket, pickle, queue, struct) pulls in for handlers slabvol never uses;
# hashlib (OpenSSL) only hashes NFD label names, off by default; uuid (and the platform
# module it imports) is not needed for a random slab name.
NEVER = {"click", "logging.handlers", "socket", "pickle", "queue", "hashlib", "_hashlib",
         "uuid", "platform"}
# Nor these: a frozen dataclass costs more to define at import than its module costs to
# import (dataclasses generates and compiles each method, and imports inspect, ast, dis and
# tokenize); typing is only annotations; logging (with traceback, string, weakref and
# threading's atexit hooks) for a few lines a call; shlex and textwrap for messages. The
# driver's own records are namedtuples and its log writer is logs.py (issue 10, bench/run's
# start-up phase).
HEAVY = {"dataclasses", "inspect", "ast", "dis", "tokenize", "typing", "logging",
         "traceback", "shlex", "textwrap"}
# Under emulation every module a call imports costs tens of milliseconds, whatever its size
# (bench/run's start-up phase): the runner starts programs without subprocess (and its
# threading, selectors, locale, signal and contextlib), and what a node has off by default
# (metrics, NFD labels) or needs only now and then (files: a write) is imported only then.
SPARED = {"subprocess", "threading", "selectors", "locale", "contextlib", "signal", "math",
          "slabvol.metrics", "slabvol.labels", "slabvol.files"}


def run_verbs(tmp_path, calls):
    config = tmp_path / "slabvol.conf"
    config.write_text(f"[slabvol]\nkubelet_dir = {tmp_path / 'kubelet'}\n"
                      f"lock_file = {tmp_path / 'run' / 'slabvol.lock'}\n"
                      f"log_file = {tmp_path / 'log' / 'slabvol.log'}\n")
    out = tmp_path / "modules.json"
    proc = subprocess.run([sys.executable, "-S", "-c", HARNESS, SRC, HERE, str(out),
                           str(config), json.dumps(calls)],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=60, check=False)
    assert proc.returncode == 0 and out.exists(), proc.stderr.decode()
    result = json.loads(out.read_text())
    return result["codes"], set(result["modules"])


def test_init_imports_the_protocol_and_nothing_else(tmp_path):
    codes, modules = run_verbs(tmp_path, [["init"]])
    assert codes == [0]
    assert {m for m in modules if m.startswith("slabvol")} == {
        "slabvol", "slabvol.cli", "slabvol.flex"}
    assert not modules & (NEVER | {"logging", "configparser", "subprocess"})


def mount_and_unmount(tmp_path):
    """A hit and a release on the fake node: their exit codes and the modules reached."""
    uid = pod_uid("lean")
    mount_dir = tmp_path / "kubelet" / "pods" / uid / "volumes" / "ax~vol_plugin" / "docker"
    mount_dir.mkdir(parents=True)
    options = json.dumps({"size_mb": "1024", "kubernetes.io/pod.namespace": "team-a",
                          "kubernetes.io/pod.uid": uid})
    return run_verbs(tmp_path, [["mount", str(mount_dir), options],
                                ["unmount", str(mount_dir)]])


def test_a_mount_and_an_unmount_import_nothing_only_people_need(tmp_path):
    codes, modules = mount_and_unmount(tmp_path)
    assert codes == [0, 0]
    assert "slabvol.driver" in modules and "slabvol.logs" in modules
    assert not modules & NEVER, sorted(modules & NEVER)
    assert not modules & HEAVY, sorted(modules & HEAVY)
    assert not modules & SPARED, sorted(modules & SPARED)
    log = (tmp_path / "log" / "slabvol.log").read_text()
    assert "reuse slab_1" in log and "free slab_1" in log
