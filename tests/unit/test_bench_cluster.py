"""bench/cluster --quick runs (as CI runs it) and writes results of the documented shape."""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
CLUSTER = os.path.join(REPO, "bench", "cluster")
ROW_KEYS = {"nodes", "regime", "scheduler", "policy", "lag", "jobs", "useful", "other",
            "cold", "evictions", "no_room", "pending", "useful_rate", "other_rate",
            "cold_rate", "no_room_rate", "pending_rate", "ratio"}


def test_quick_run_writes_the_table_the_sweep_and_the_plot(tmp_path):
    out = tmp_path / "cluster"
    run = subprocess.run([sys.executable, CLUSTER, "--quick", "--seed", "3", "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "ratio" in run.stdout and "tight" in run.stdout

    result = json.loads((out / "results.json").read_text())
    assert set(result) == {"params", "table", "sweep"}
    assert result["params"]["quick"] is True and result["params"]["lag"] == 60
    rows = result["table"]
    assert {r["regime"] for r in rows} == {"roomy", "medium", "tight"}
    for row in rows:
        assert set(row) == ROW_KEYS
        assert row["jobs"] > 0
        assert row["useful"] + row["other"] + row["cold"] + row["no_room"] + row["pending"] \
            == row["jobs"]
        assert row["lag"] == 0 or row["scheduler"] == "affinity"
    combos = {(r["scheduler"], r["policy"], r["lag"]) for r in rows}
    assert ("spread", "today", 0) in combos and ("affinity", "keyed", 60) in combos
    assert all(r["ratio"] == 1 for r in rows if (r["scheduler"], r["policy"]) ==
               ("spread", "today"))

    sweep = result["sweep"]
    assert set(sweep) == {"roomy", "medium", "tight"}
    for lines in sweep.values():
        assert set(lines) == {"spread+today", "spread+keyed", "affinity+today",
                              "affinity+keyed"}
        for points in lines.values():
            assert [p["nodes"] for p in points] == result["params"]["sweep_nodes"]
            assert all(0 <= p["useful_rate"] <= 1 for p in points)

    svg = ET.parse(str(out / "hits.svg")).getroot()
    assert svg.tag.endswith("svg")
    assert len(svg.findall("{http://www.w3.org/2000/svg}polyline")) == 12
