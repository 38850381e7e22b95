"""What a kubelet call pays to import its modules, where it runs (issue 10).

    python bench/imports.py [--rounds N]          here (the host: no LVM needed)
    scripts/on-node bench/imports.sh [--rounds N] in the VM, where bench/run measures

The driver's interpreter (this one) with the flag install.sh gives it (``-S``; the package
from this venv's site-packages as ``vol_plugin`` adds it, else ./src), N rounds of fresh
interpreters, interleaved:

- ``bare``: ``-c pass``, the interpreter part of bench/run's floor;
- ``json``: ``import json`` alone, which no Python driver that reads the kubelet's options
  and LVM's reports with the standard library can do without;
- ``mount``: every module a mount imports with the default config (no metrics, no NFD):
  ``slabvol.cli``, ``flex``, ``driver``, ``config`` and what they import;

then ``-X importtime`` of ``mount`` each round: every module's own import time (median of
the rounds) and whether the interpreter read it from a file or has it frozen or built in.
Results: $SLABVOL_OUT/imports.json (default out/) and a table on stdout.
"""

import argparse
import _imp
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOUNT_MODULES = ("slabvol.cli", "slabvol.flex", "slabvol.request", "slabvol.driver",
                 "slabvol.config")


def package_dir():
    """Where the driver's package is read from: this venv's site-packages when it is
    installed there (a node's layout, .venv-node), else the checkout's src."""
    purelib = sysconfig.get_paths()["purelib"]
    if os.path.isfile(os.path.join(purelib, "slabvol", "__init__.py")):
        return purelib
    return os.path.join(REPO, "src")


def cases(path):
    prefix = f"import sys; sys.path.append({path!r}); "
    return {"bare": "pass", "json": "import json",
            "mount": prefix + "import " + ", ".join(MOUNT_MODULES)}


def parse_importtime(text):
    """{module: own microseconds} from ``-X importtime``'s stderr."""
    own = {}
    for line in text.splitlines():
        if not line.startswith("import time:") or "[us]" in line:
            continue
        fields = [field.strip() for field in line.split(":", 1)[1].split("|")]
        if len(fields) == 3 and fields[0].isdigit():
            own[fields[2]] = int(fields[0])
    return own


def origin(name):
    """'file' when the interpreter reads the module from a file, else 'frozen'/'builtin'."""
    if name in sys.builtin_module_names:
        return "builtin"
    return "frozen" if _imp.is_frozen(name) else "file"


def summarise(walls, own_runs):
    """The result document from the wall times per case and the importtime runs."""
    medians = {case: statistics.median(times) for case, times in walls.items()}
    modules = {}
    for name in sorted({name for run in own_runs for name in run}):
        values = [run[name] for run in own_runs if name in run]
        modules[name] = {"own_ms": statistics.median(values) / 1000, "origin": origin(name)}
    files = [m["own_ms"] for m in modules.values() if m["origin"] == "file"]
    return {
        "wall_ms": {case: round(value * 1000) for case, value in medians.items()},
        "runs_ms": {case: [round(t * 1000) for t in times] for case, times in walls.items()},
        "json_over_bare_ms": round((medians["json"] - medians["bare"]) * 1000),
        "mount_over_bare_ms": round((medians["mount"] - medians["bare"]) * 1000),
        "modules_read_from_files": len(files),
        "file_module_own_ms_median": round(statistics.median(files), 1) if files else None,
        "modules": modules,
    }


def table(doc):
    w = doc["wall_ms"]
    lines = [f"fresh interpreter, median of {len(doc['runs_ms']['bare'])} rounds (ms): "
             f"bare {w['bare']}, import json {w['json']} (+{doc['json_over_bare_ms']}), "
             f"a mount's imports {w['mount']} (+{doc['mount_over_bare_ms']})",
             f"modules a mount reads from files: {doc['modules_read_from_files']}, "
             f"own import time of one: median {doc['file_module_own_ms_median']} ms",
             "own import time, median ms (-X importtime):"]
    ranked = sorted(doc["modules"].items(), key=lambda item: -item[1]["own_ms"])
    lines += [f"  {name:28} {m['own_ms']:7.1f}  {m['origin']}" for name, m in ranked]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--json", default=os.path.join(
        os.environ.get("SLABVOL_OUT", os.path.join(REPO, "out")), "imports.json"))
    args = parser.parse_args(argv)
    path = package_dir()
    codes = cases(path)
    walls = {case: [] for case in codes}
    own_runs = []
    for _ in range(args.rounds):
        for case, code in codes.items():
            start = time.monotonic()
            subprocess.run([sys.executable, "-S", "-c", code], check=True)
            walls[case].append(time.monotonic() - start)
        traced = subprocess.run([sys.executable, "-S", "-X", "importtime", "-c", codes["mount"]],
                                stderr=subprocess.PIPE, universal_newlines=True, check=True)
        own_runs.append(parse_importtime(traced.stderr))
    doc = summarise(walls, own_runs)
    doc.update(python=sys.version.split()[0], package_dir=path, rounds=args.rounds,
               when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as handle:
        json.dump(doc, handle, indent=1, sort_keys=True)
    print(table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
