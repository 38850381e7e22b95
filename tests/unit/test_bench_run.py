"""The pure parts of bench/run (bench/report.py): trace phases, the floor's commands, log
timings, ratios, the table, the plot, LVM metadata cloning and the load summary."""

import importlib.util
import json
import os
import re
import xml.etree.ElementTree as ET

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
_spec = importlib.util.spec_from_file_location("bench_report",
                                               os.path.join(REPO, "bench", "report.py"))
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)

VG = "slabvol_bench"
REPORT = ["lvm", "fullreport", "--reportformat", "json", VG]
CLAIM = ["lvchange", "--config", "backup { archive = 0 }", "--deltag", "slabvol.state=free",
         "--addtag", "slabvol.state=in-use", f"{VG}/slab_a"]
MOUNT = ["mount", "-t", "ext4", f"/dev/{VG}/slab_a", "/k/pods/u/volumes/ax~vol_plugin/v"]


def trace_lines(pid=7):
    """A hit mount as the hook records it: start 100.30, report, claim, mount, exit."""
    events = [("start", 100.30, None), ("spawn", 100.50, REPORT), ("reaped", 100.70, REPORT),
              ("spawn", 100.75, CLAIM), ("reaped", 101.00, CLAIM),
              ("spawn", 101.02, MOUNT), ("reaped", 101.10, MOUNT), ("exit", 101.15, None)]
    lines = []
    for event, t, argv in events:
        record = {"event": event, "t": t, "pid": pid}
        if argv is not None:
            record["argv"] = argv
        lines.append(json.dumps(record))
    lines.insert(3, json.dumps({"event": "start", "t": 100.6, "pid": 99}))  # another process
    return "\n".join(lines) + "\n"


def test_a_trace_splits_into_interpreter_start_up_commands_driver_and_exit():
    events = report.parse_trace(trace_lines())
    assert all(e["pid"] == 7 for e in events)
    phases = report.phases(events, spawned=100.0, ended=101.25)
    assert list(phases) == ["interpreter", "start-up", "lvm fullreport", "lvchange (tags)",
                            "mount", "driver", "exit"]
    expected = {"interpreter": 0.30, "start-up": 0.20, "lvm fullreport": 0.20,
                "lvchange (tags)": 0.25, "mount": 0.08, "driver": 0.07, "exit": 0.15}
    assert phases == pytest.approx(expected)
    assert sum(phases.values()) == pytest.approx(1.25)  # the phases add up to the wall time


def test_a_repeated_command_label_is_summed_and_medians_keep_the_order():
    text = trace_lines().replace('"t": 101.02', '"t": 101.02').replace(
        json.dumps(MOUNT), json.dumps(REPORT))
    phases = report.phases(report.parse_trace(text), 100.0, 101.25)
    assert phases["lvm fullreport"] == pytest.approx(0.28)
    runs = [{"a": 1.0, "b": 2.0}, {"a": 3.0, "c": 1.0}, {"a": 2.0, "b": 4.0}]
    assert report.median_phases(runs) == {"a": 2.0, "b": 2.0, "c": 0.0}


def test_no_start_event_means_no_trace():
    assert report.parse_trace('{"event": "spawn", "t": 1, "pid": 1, "argv": ["x"]}\n') == []


def _events(*argvs, pid=7):
    out, t = [{"event": "start", "t": 0.0, "pid": pid}], 0.0
    for argv in argvs:
        out += [{"event": "spawn", "t": t + 0.1, "pid": pid, "argv": argv},
                {"event": "reaped", "t": t + 0.2, "pid": pid, "argv": argv}]
        t += 0.2
    return out


def test_the_floor_is_one_report_the_changes_mkfs_and_mount():
    probe = ["lvm", "version"]
    config = ["lvmconfig", "--typeconfig", "full", "devices"]
    learn = ["vgs", "--reportformat", "json", "-o", "pv_name", VG]
    mkfs = ["mkfs.ext4", "-q", "-F", f"/dev/{VG}/slab_a"]
    events = _events(probe, config, learn, REPORT, CLAIM, mkfs, MOUNT, REPORT)
    assert report.floor_argvs(events) == [REPORT, CLAIM, mkfs, MOUNT]
    # without a fullreport: the longest vgs is the report (the old driver read twice)
    vgs = ["vgs", "--reportformat", "json", "-o", "vg_name,vg_size,lv_name,lv_tags", VG]
    events = _events(learn, vgs, CLAIM, MOUNT)
    assert report.floor_argvs(events) == [vgs, CLAIM, MOUNT]
    assert report.floor_argvs(_events(["umount", "/x"])) == [["umount", "/x"]]


def test_labels_name_the_program_and_what_lvchange_does():
    assert report.command_label(CLAIM) == "lvchange (tags)"
    assert report.command_label(["lvchange", "--activate", "y", "vg/x"]) == \
        "lvchange (activate)"
    assert report.command_label(["/sbin/vgs", "-o", "vg_name"]) == "vgs"
    assert report.command_label(["mkfs.ext4", "-q", "/dev/vg/x"]) == "mkfs.ext4"


def test_rename_swaps_the_lv_name_only_where_it_is_a_path_component():
    argvs = [["lvcreate", "--name", "slab_a", "--addtag", "slabvol.dir=/x/slab_ab", VG],
             ["mkfs.ext4", f"/dev/{VG}/slab_a"], CLAIM]
    out = report.rename(argvs, "slab_a", "floor_1")
    assert out[0] == ["lvcreate", "--name", "floor_1", "--addtag", "slabvol.dir=/x/slab_ab", VG]
    assert out[1] == ["mkfs.ext4", f"/dev/{VG}/floor_1"]
    assert out[2][-1] == f"{VG}/floor_1"


def test_the_drivers_own_timings_are_read_from_its_log():
    log = ("2026-12-02 03:10:01,123 4242 INFO slabvol.driver: reuse slab_a (512 MiB ext4, "
           "ns=bench, key=-, 3 earlier uses) for /k/pods/u/volumes/ax~vol_plugin/v in 0.46 s\n"
           "2026-12-02 03:10:02,000 4243 INFO slabvol.driver: free slab_a from /k: kept\n"
           "2026-12-02 03:10:05,500 4244 INFO slabvol.driver: create slab_b (512 MiB ext4, "
           "ns=x, key=-, ax-docker-graph-storage) for /k after evicting 0 in 1.20 s\n")
    assert report.driver_log_timings(log) == [("reuse", 0.46), ("create", 1.2)]


def test_ratios_and_changes():
    assert report.ratio(1.3, 1.0) == pytest.approx(1.3)
    assert report.ratio(None, 1.0) is None and report.ratio(1.0, 0) is None
    assert report.change(1.05, 1.0) == pytest.approx(0.05)
    assert report.median([3, 1, 2]) == 2 and report.median([]) is None


RESULT = {
    "overhead": {
        "hit": {"wall_s": 2.6, "floor_s": 2.0, "phases": {"interpreter": 0.5, "mount": 0.2}},
        "miss": {"wall_s": 4.0, "floor_s": 3.2, "phases": {}},
        "unmount": {"wall_s": 2.5, "floor_s": 2.0},
    },
    "scale": {"points": [{"slabs": 1, "wall_s": 2.0, "floor_s": 1.5},
                         {"slabs": 50, "wall_s": 2.2, "floor_s": 1.6},
                         {"slabs": 200, "wall_s": 2.6, "floor_s": 1.8}]},
    "devices": {"count": 40, "wall_s": 2.1, "baseline_wall_s": 2.0, "floor_s": 1.5,
                "baseline_floor_s": 1.5, "devices_read_by_the_driver": 0},
    "archive": {"per_hit_cycle": [0, 0], "per_miss_cycle": [1, 1],
                "bounded": {"seeded": 60, "after": 20, "kept": 20}},
}


def test_the_table_has_a_row_per_goal_with_its_verdict():
    rows = report.rows(RESULT)
    by_name = {r[0]: r for r in rows}
    assert by_name["hit vs floor"][1:] == ("2600", "2000", "1.30", "<= 1.3", "yes")
    assert by_name["miss vs floor"][3:] == ("1.25", "<= 1.3", "yes")
    assert by_name["unmount vs floor"][3] == "1.25"
    assert by_name["hit, 200 slabs / 1"][3:] == ("1.30 (floor 1.20)", "<= 1.2", "NO")
    assert by_name["hit, +40 devices"][3:] == ("+5% (floor +0%)", "< 10%", "yes")
    assert by_name["of the +40 devices, read by hit+unmount"][1:] == ("0", "", "", "0", "yes")
    read = dict(RESULT, devices=dict(RESULT["devices"], devices_read_by_the_driver=3))
    assert {r[0]: r for r in report.rows(read)}[
        "of the +40 devices, read by hit+unmount"][-1] == "NO"
    assert by_name["archive files / hit cycle"][1] == "0"
    assert by_name["archive files / hit cycle"][-1] == "yes"
    assert by_name["archive files / miss cycle"][-1] == "yes"
    assert by_name["archive files of the VG"][1:] == ("20 (seeded 60)", "", "", "<= 20", "yes")
    text = report.format_table(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["measure", "slabvol", "ms", "floor", "ms", "ratio", "goal",
                                "met"]
    assert set(lines[1]) <= {"-", " "}
    assert len(lines) == 2 + len(rows)
    assert "hit: interpreter 500, mount 200 (ms; sum 700)" in report.format_phases(RESULT)


def test_markdown_tables_for_the_readme():
    text = report.markdown(report.rows(RESULT))
    assert text.splitlines()[1] == "|---|---|---|---|---|---|"
    assert "| hit vs floor | 2600 | 2000 | 1.30 | <= 1.3 | yes |" in text
    phases = report.markdown_phases(RESULT).splitlines()
    assert phases[0] == "| phase | hit |"
    assert phases[2:] == ["| interpreter | 500 |", "| mount | 200 |", "| **sum** | 700 |"]


def test_the_table_leaves_out_what_was_not_measured():
    assert report.rows({}) == []
    assert report.format_table([]).count("\n") == 1


def test_the_plot_is_svg_with_one_line_per_series():
    text = report.scale_plot(RESULT)
    root = ET.fromstring(text)
    ns = "{http://www.w3.org/2000/svg}"
    lines = root.findall(f"{ns}polyline")
    assert len(lines) == 2
    assert len(root.findall(f"{ns}circle")) == 6
    labels = [t.text for t in root.findall(f"{ns}text")]
    assert "slabvol" in labels and "floor" in labels and "200" in labels
    # y grows downwards: slabvol (slower) is drawn above the floor at every point
    slab_y = [float(p.split(",")[1]) for p in lines[0].get("points").split()]
    floor_y = [float(p.split(",")[1]) for p in lines[1].get("points").split()]
    assert all(s < f for s, f in zip(slab_y, floor_y))


def test_axis_maxima_are_round():
    assert [report._nice(v) for v in (0.5, 1800, 2600, 4100, 9000, 10)] == \
        [1, 2000, 5000, 5000, 10000, 10]


METADATA = """vg {
\tid = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa"
\tseqno = 4
\textent_size = 8192\t\t# 4 Megabytes

\tphysical_volumes {

\t\tpv0 {
\t\t\tid = "bbbbbb-bbbb-bbbb-bbbb-bbbb-bbbb-bbbbbb"
\t\t\tdevice = "/dev/loop0"\t# Hint only
\t\t\tpe_start = 2048
\t\t\tpe_count = 200\t# 800 Megabytes
\t\t}
\t}

\tlogical_volumes {

\t\tslab_a {
\t\t\tid = "cccccc-cccc-cccc-cccc-cccc-cccc-cccccc"
\t\t\tstatus = ["READ", "WRITE", "VISIBLE"]
\t\t\ttags = ["slabvol.state=free"]
\t\t\tsegment_count = 1

\t\t\tsegment1 {
\t\t\t\tstart_extent = 0
\t\t\t\textent_count = 128\t# 512 Megabytes

\t\t\t\ttype = "striped"
\t\t\t\tstripe_count = 1\t# linear

\t\t\t\tstripes = [
\t\t\t\t\t"pv0", 0
\t\t\t\t]
\t\t\t}
\t\t}

\t\tfill_0000 {
\t\t\tid = "dddddd-dddd-dddd-dddd-dddd-dddd-dddddd"
\t\t\tstatus = ["READ", "WRITE", "VISIBLE"]
\t\t\ttags = ["slabvol.v=1", "slabvol.state=free", "slabvol.size_mb=4"]
\t\t\tsegment_count = 1

\t\t\tsegment1 {
\t\t\t\tstart_extent = 0
\t\t\t\textent_count = 1\t# 4 Megabytes

\t\t\t\ttype = "striped"
\t\t\t\tstripe_count = 1\t# linear

\t\t\t\tstripes = [
\t\t\t\t\t"pv0", 128
\t\t\t\t]
\t\t\t}
\t\t}
\t}
}
"""


def test_cloned_lvs_get_their_own_names_ids_and_free_extents():
    text = report.clone_lvs(METADATA, "fill_0000", ["fill_0001", "fill_0002"])
    names = re.findall(r"\n\t\t(\w+) \{", text)
    assert names == ["pv0", "slab_a", "fill_0000", "fill_0001", "fill_0002"]
    ids = re.findall(r'\n\t\t\tid = "([^"]+)"', text)
    assert len(set(ids)) == len(ids) == 5
    assert all(re.fullmatch(r"\w{6}(-\w{4}){5}-\w{6}", i) for i in ids)
    starts = [int(s) for s in re.findall(r'"pv0", (\d+)', text)]
    assert starts == [0, 128, 129, 130]  # the extents after slab_a and the template
    assert text.count('tags = ["slabvol.v=1", "slabvol.state=free", "slabvol.size_mb=4"]') == 3
    assert text.count("{") == text.count("}")


def test_the_load_summary():
    text = ("load 1.50 03:05:20\n  98.0 qemu-system-x86\n  40.0 python\n"
            "load 2.50 03:05:40\n  97.0 qemu-system-x86\n  30.0 pytest\n")
    assert report.load_summary(text) == {
        "load_min": 1.5, "load_mean": 2.0, "load_max": 2.5, "load_samples": 2,
        "busiest": {"qemu-system-x86": 2, "python": 1, "pytest": 1}}
    assert report.load_summary("") == {}


def test_the_trace_hook_sees_every_command_the_drivers_runner_starts(tmp_path):
    """bench/trace/sitecustomize.py against the real runner: a start, then a spawn and a
    reaped event per command with its argv and exit code, in order, parsed into phases."""
    import subprocess
    import sys

    trace = tmp_path / "trace.jsonl"
    code = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import sitecustomize\n"
            "from slabvol.process import Runner\n"
            "Runner().call(['sh', '-c', 'exit 3']); Runner().call(['true'])\n")
    subprocess.run([sys.executable, "-S", "-c", code, os.path.join(REPO, "bench", "trace"),
                    os.path.join(REPO, "src")], check=True, timeout=60,
                   env=dict(os.environ, SLABVOL_BENCH_TRACE=str(trace)))
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [(e["event"], e.get("argv"), e.get("rc")) for e in events] == [
        ("start", events[0]["argv"], None),
        ("spawn", ["sh", "-c", "exit 3"], None), ("reaped", ["sh", "-c", "exit 3"], 3),
        ("spawn", ["true"], None), ("reaped", ["true"], 0)]
    phases = report.phases(events, events[0]["t"] - 0.1, events[-1]["t"] + 0.1)
    assert list(phases) == ["interpreter", "start-up", "sh", "true", "driver", "exit"]
