"""The pure parts of bench/imports.py: reading -X importtime, where a module comes from,
the summary, and that the cases import what a mount imports."""

import importlib.util
import json
import os
import subprocess
import sys

from test_lean_start import mount_and_unmount

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
_spec = importlib.util.spec_from_file_location("bench_imports",
                                               os.path.join(REPO, "bench", "imports.py"))
imports = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(imports)

IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       981 |        981 |   marshal
import time:      1203 |       2100 | enum
import time:        40 |         40 |     slabvol.errors
some other line a module printed
"""


def test_importtime_lines_become_own_microseconds_per_module():
    assert imports.parse_importtime(IMPORTTIME) == {"marshal": 981, "enum": 1203,
                                                    "slabvol.errors": 40}


def test_a_module_is_from_a_file_frozen_or_built_in():
    assert imports.origin("json") == "file"
    assert imports.origin("os") == "frozen"  # (frozen since Python 3.11)
    assert imports.origin("sys") == "builtin"


def test_the_summary_takes_medians_and_counts_the_modules_read_from_files():
    walls = {"bare": [0.60, 0.70, 0.65], "json": [1.30, 1.20, 1.25],
             "mount": [2.20, 2.40, 2.30]}
    runs = [{"json": 40000, "os": 1000}, {"json": 50000, "os": 3000},
            {"json": 45000, "os": 2000}]
    doc = imports.summarise(walls, runs)
    assert doc["wall_ms"] == {"bare": 650, "json": 1250, "mount": 2300}
    assert doc["json_over_bare_ms"] == 600 and doc["mount_over_bare_ms"] == 1650
    assert doc["modules"]["json"] == {"own_ms": 45.0, "origin": "file"}
    assert doc["modules"]["os"] == {"own_ms": 2.0, "origin": "frozen"}
    assert doc["modules_read_from_files"] == 1 and doc["file_module_own_ms_median"] == 45.0
    assert "import json 1250 (+600)" in imports.table(doc)


def test_the_mount_case_imports_what_a_mount_imports(tmp_path):
    """Every module a mount and an unmount reach on the fake node (test_lean_start's
    harness): if the driver gains one on its path, the probe must import it too."""
    codes, reached = mount_and_unmount(tmp_path)
    assert codes == [0, 0]
    code = imports.cases(os.path.join(REPO, "src"))["mount"]
    out = subprocess.run([sys.executable, "-S", "-c",
                          code + "; import json; print(json.dumps(sorted(sys.modules)))"],
                         stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
    probe = set(json.loads(out))
    assert sorted(reached - probe) == []
