"""The pure half of bench/run: turning traces and timings into phases, floors, ratios, a
table and an SVG plot. No I/O except main(), which bench/run calls on the host after the
measurements (bench.py, on the node) have written out/bench.json:

    python3 bench/report.py out/bench.json [--load-before TEXT --load-after TEXT]

adds the host's load to the JSON, prints the table and writes bench.svg next to it.
Standard library only.
"""

import argparse
import json
import os
import re
import statistics
import sys
import uuid

# The issue's goals (issue 10): ratio of slabvol's wall time to its floor, etc.
GOAL_VS_FLOOR = 1.3
GOAL_SCALE = 1.2
GOAL_DEVICES = 0.10

# read-only reports of the VG (the floor keeps one)
REPORTS = ("vgs", "lvs", "pvs", "lvm fullreport", "lvm vgs", "lvm lvs")


# -- traces (bench/trace/sitecustomize.py) -------------------------------------------------

def parse_trace(text):
    """The JSON-lines events of one traced driver call, in order; lines of other processes
    (a child that is itself Python would load the hook too) are dropped."""
    events = [json.loads(line) for line in text.splitlines() if line.strip()]
    start = next((e for e in events if e["event"] == "start"), None)
    if start is None:
        return []
    return [e for e in events if e.get("pid") == start["pid"]]


def command_label(argv):
    """A short name for one command: the program, and what an lvchange does."""
    name = os.path.basename(argv[0]) if argv else "?"
    if name == "lvm" and len(argv) > 1 and not argv[1].startswith("-"):
        name = f"lvm {argv[1]}"
    if name == "lvchange":
        if any(a in ("--activate", "-a", "-ay") for a in argv):
            return "lvchange (activate)"
        if any(a in ("--addtag", "--deltag") for a in argv):
            return "lvchange (tags)"
    return name


def commands(events):
    """[(argv, seconds)] of the children the driver ran, in order."""
    out, open_ = [], []
    for e in events:
        if e["event"] == "spawn":
            open_.append(e)
        elif e["event"] == "reaped":
            start = next((s for s in open_ if s["argv"] == e["argv"]), None)
            if start is not None:
                open_.remove(start)
                out.append((start["argv"], e["t"] - start["t"]))
    return out


def phases(events, spawned, ended):
    """One traced call split into phases, in seconds, in order of first appearance:
    ``interpreter`` (exec until the interpreter runs site code), ``start-up`` (imports,
    configuration, lock, mount table: until the first command), one entry per command
    label (summed when a label repeats), ``driver`` (the driver's own work between
    commands), ``exit`` (after the last command until the caller saw the process end).
    ``spawned``/``ended`` are the caller's wall-clock times around the call."""
    start = next(e["t"] for e in events if e["event"] == "start")
    out = {"interpreter": start - spawned}
    cursor, driver = start, 0.0
    first = True
    running = []
    for e in events:
        if e["event"] == "spawn":
            if not running:
                gap = e["t"] - cursor
                if first:
                    out["start-up"] = gap
                    first = False
                else:
                    driver += gap
            running.append(e)
        elif e["event"] == "reaped":
            begun = next((s for s in running if s["argv"] == e["argv"]), None)
            if begun is None:
                continue
            running.remove(begun)
            label = command_label(e["argv"])
            out[label] = out.get(label, 0.0) + e["t"] - begun["t"]
            cursor = e["t"]
    if first:
        out["start-up"] = (ended - start)
        cursor = ended
    out["driver"] = driver
    out["exit"] = ended - cursor
    return out


def median_phases(runs):
    """Median of each phase over several calls (a phase missing in a call counts 0), in
    the order the phases first appear."""
    order = []
    for run in runs:
        order += [k for k in run if k not in order]
    return {k: statistics.median([run.get(k, 0.0) for run in runs]) for k in order}


# What the floor runs: the one VG report, the metadata changes, mkfs and mount/umount, with
# the driver's exact argv. Anything else the driver runs (a version probe, a config read, a
# second report) is the driver's own overhead: it shows in the phases, not in the floor.
FLOOR_PROGRAMS = ("lvchange", "lvcreate", "lvremove", "mount", "umount")


def floor_argvs(events):
    """The commands to run bare for the floor, in the driver's order: every command of
    FLOOR_PROGRAMS or mkfs.*, and one report (``lvm fullreport`` if the driver ran one,
    else its longest ``vgs``/``lvs`` command line: the one with the fields)."""
    argvs = [list(argv) for argv, _ in commands(events)]
    reports = [a for a in argvs if command_label(a) in REPORTS]
    full = [a for a in reports if command_label(a) == "lvm fullreport"]
    chosen = (full or sorted(reports, key=lambda a: len(" ".join(a)), reverse=True)
              or [None])[0]
    out = []
    for argv in argvs:
        name = os.path.basename(argv[0])
        if argv is chosen or name in FLOOR_PROGRAMS or name.startswith("mkfs."):
            out.append(argv)
    return out


def rename(argvs, old, new):
    """The argv lists with every occurrence of LV name ``old`` (as a word inside an
    argument: vg/old, /dev/vg/old, --name old) replaced by ``new``."""
    def swap(arg):
        parts = arg.split("/")
        return "/".join(new if p == old else p for p in parts)
    return [[swap(a) for a in argv] for argv in argvs]


def driver_log_timings(text):
    """[(action, seconds)] from the driver's own log lines that end in ``in N.NN s``
    (``reuse ... in 0.46 s``, ``create ... in 1.20 s``): its in-process claim+mount time."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[-1] == "s" and words[-3] == "in":
            try:
                seconds = float(words[-2])
            except ValueError:
                continue
            head = line.split(": ", 1)[-1].split()
            out.append((head[0] if head else "?", seconds))
    return out


# -- LVM text metadata ---------------------------------------------------------------------

def clone_lvs(text, template, names):
    """LVM text metadata with ``names`` added as copies of LV ``template`` (one extent
    each, on free extents of the template's PV)."""
    block = re.search(r"\n\t\t" + re.escape(template) + r" \{\n.*?\n\t\t\}\n", text, re.S)
    body = block.group(0)
    pv = re.search(r'stripes = \[\s*"(pv\d+)"', body).group(1)
    pv_block = re.search(r"\n\t\t" + pv + r" \{\n.*?\n\t\t\}\n", text, re.S).group(0)
    pe_count = int(re.search(r"pe_count = (\d+)", pv_block).group(1))
    used = set()
    for seg in re.finditer(r'extent_count = (\d+)[^}]*?stripes = \[\s*"' + pv + r'", (\d+)',
                           text, re.S):
        used.update(range(int(seg.group(2)), int(seg.group(2)) + int(seg.group(1))))
    free = iter(e for e in range(pe_count) if e not in used)
    copies = []
    for name in names:
        copy = body.replace(f"\t\t{template} {{", f"\t\t{name} {{", 1)
        h = uuid.uuid4().hex + uuid.uuid4().hex
        lv_id = "-".join([h[0:6], h[6:10], h[10:14], h[14:18], h[18:22], h[22:26], h[26:32]])
        copy = re.sub(r'id = "[^"]+"', f'id = "{lv_id}"', copy, count=1)
        copy = re.sub(r'(stripes = \[\s*"' + pv + r'", )\d+',
                      lambda m: m.group(1) + str(next(free)), copy)
        copies.append(copy)
    return text[:block.end()] + "".join(copies) + text[block.end():]



# -- numbers --------------------------------------------------------------------------------

def median(values):
    return statistics.median(values) if values else None


def ratio(value, base):
    if value is None or not base:
        return None
    return value / base


def change(value, base):
    """Relative change of value against base (0.05 = 5% slower)."""
    r = ratio(value, base)
    return None if r is None else r - 1


# -- the table ---------------------------------------------------------------------------------

def _ms(seconds):
    return "-" if seconds is None else f"{1000 * seconds:.0f}"


def _x(value):
    return "-" if value is None else f"{value:.2f}"


def _verdict(ok):
    return "-" if ok is None else ("yes" if ok else "NO")


def rows(result):
    """The table's rows: (measure, slabvol ms, floor ms, ratio, goal, met)."""
    out = []
    ov = result.get("overhead", {})
    for op in ("hit", "miss", "unmount"):
        row = ov.get(op)
        if not row:
            continue
        r = ratio(row["wall_s"], row["floor_s"])
        out.append((f"{op} vs floor", _ms(row["wall_s"]), _ms(row["floor_s"]), _x(r),
                    f"<= {GOAL_VS_FLOOR}", _verdict(None if r is None else r <= GOAL_VS_FLOOR)))
    scale = result.get("scale", {}).get("points", [])
    if len(scale) >= 2:
        first, last = scale[0], scale[-1]
        r = ratio(last["wall_s"], first["wall_s"])
        rf = ratio(last["floor_s"], first["floor_s"])
        out.append((f"hit, {last['slabs']} slabs / {first['slabs']}",
                    f"{_ms(last['wall_s'])} / {_ms(first['wall_s'])}",
                    f"{_ms(last['floor_s'])} / {_ms(first['floor_s'])}",
                    f"{_x(r)} (floor {_x(rf)})", f"<= {GOAL_SCALE}",
                    _verdict(None if r is None else r <= GOAL_SCALE)))
    dev = result.get("devices")
    if dev:
        c = change(dev["wall_s"], dev["baseline_wall_s"])
        cf = change(dev["floor_s"], dev["baseline_floor_s"])
        out.append((f"hit, +{dev['count']} devices",
                    f"{_ms(dev['wall_s'])} / {_ms(dev['baseline_wall_s'])}",
                    f"{_ms(dev['floor_s'])} / {_ms(dev['baseline_floor_s'])}",
                    "-" if c is None else f"{100 * c:+.0f}% (floor {100 * (cf or 0):+.0f}%)",
                    f"< {100 * GOAL_DEVICES:.0f}%",
                    _verdict(None if c is None else abs(c) < GOAL_DEVICES)))
        if "devices_read_by_the_driver" in dev:
            read = dev["devices_read_by_the_driver"]
            out.append((f"of the +{dev['count']} devices, read by hit+unmount", str(read), "",
                        "", "0", _verdict(read == 0)))
    arch = result.get("archive")
    if arch:
        hit, miss = arch.get("per_hit_cycle"), arch.get("per_miss_cycle")
        out.append(("archive files / hit cycle", _fmt_count(hit), "", "", "0",
                    _verdict(None if hit is None else max(hit) == 0)))
        out.append(("archive files / miss cycle", _fmt_count(miss), "", "",
                    "<= 1 per new slab", _verdict(None if miss is None else max(miss) <= 1)))
        if "bounded" in arch:
            b = arch["bounded"]
            out.append(("archive files of the VG", f"{b['after']} (seeded {b['seeded']})",
                        "", "", f"<= {b['kept']}", _verdict(b["after"] <= b["kept"])))
    return out


def _fmt_count(values):
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}-{hi}"


def format_table(table_rows, head=("measure", "slabvol ms", "floor ms", "ratio", "goal", "met")):
    widths = [max(len(str(r[i])) for r in [head, *table_rows]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(head, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
              for r in table_rows]
    return "\n".join(lines)


def format_phases(result):
    """One block per operation: each phase's median ms, and the floor's commands."""
    lines = []
    for op, row in result.get("overhead", {}).items():
        ph = row.get("phases") or {}
        if not ph:
            continue
        total = sum(ph.values())
        lines.append(f"{op}: {', '.join(f'{k} {1000 * v:.0f}' for k, v in ph.items())} "
                     f"(ms; sum {1000 * total:.0f})")
    return "\n".join(lines)


def markdown(table_rows):
    """The table as Markdown, for the README."""
    head = ("measure", "slabvol ms", "floor ms", "ratio", "goal", "met")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in table_rows]
    return "\n".join(lines)


def markdown_phases(result):
    """Phases (median ms) as a Markdown table: one row per phase, one column per call."""
    ops = [op for op in ("hit", "miss", "unmount")
           if result.get("overhead", {}).get(op, {}).get("phases")]
    order = []
    for op in ops:
        order += [k for k in result["overhead"][op]["phases"] if k not in order]
    lines = ["| phase | " + " | ".join(ops) + " |", "|---|" + "---|" * len(ops)]
    for phase in order:
        cells = [result["overhead"][op]["phases"].get(phase) for op in ops]
        lines.append(f"| {phase} | " + " | ".join(_ms(c) for c in cells) + " |")
    sums = [sum(result["overhead"][op]["phases"].values()) for op in ops]
    lines.append("| **sum** | " + " | ".join(_ms(c) for c in sums) + " |")
    return "\n".join(lines)


# -- the plot --------------------------------------------------------------------------------

def svg_plot(series, title, xlabel="slabs in the volume group", ylabel="hit mount, ms",
             width=420, height=260):
    """A small line plot: ``series`` is {name: (colour, [(x, seconds), ...])}; y in ms,
    starting at 0. Hand-written SVG, no dependency."""
    ml, mr, mt, mb = 55, 120, 30, 40
    pw, ph = width - ml - mr, height - mt - mb
    xs = [x for _, pts in series.values() for x, _ in pts]
    ys = [1000 * y for _, pts in series.values() for _, y in pts if y is not None]
    xmax = max(xs) if xs else 1
    ymax = _nice(max(ys) if ys else 1)

    def px(x):
        return ml + pw * x / xmax

    def py(y):
        return mt + ph * (1 - 1000 * y / ymax)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{ml}" y="18" font-size="12">{_esc(title)}</text>',
           f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>']
    for k in range(5):
        v = ymax * k / 4
        y = mt + ph * (1 - k / 4)
        out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{ml - 4}" y="{y + 4:.1f}" text-anchor="end">{v:g}</text>')
    for x in sorted(set(xs)):
        out.append(f'<text x="{px(x):.1f}" y="{mt + ph + 14}" text-anchor="middle">{x}</text>')
    out.append(f'<text x="{ml + pw / 2}" y="{height - 6}" text-anchor="middle">'
               f'{_esc(xlabel)}</text>')
    out.append(f'<text x="12" y="{mt + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 12 {mt + ph / 2})">{_esc(ylabel)}</text>')
    for i, (name, (colour, pts)) in enumerate(series.items()):
        pts = [(x, y) for x, y in pts if y is not None]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                   f'stroke-width="2"/>')
        out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>'
                for x, y in pts]
        ly = mt + 14 + 18 * i
        out.append(f'<line x1="{ml + pw + 10}" x2="{ml + pw + 28}" y1="{ly}" y2="{ly}" '
                   f'stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{ml + pw + 32}" y="{ly + 4}">{_esc(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _nice(value):
    """A round axis maximum at or above value (1, 2, 2.5, 5 times a power of ten)."""
    if value <= 0:
        return 1
    power = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def _esc(text):
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def scale_plot(result):
    points = result.get("scale", {}).get("points", [])
    return svg_plot({"slabvol": ("#1f77b4", [(p["slabs"], p["wall_s"]) for p in points]),
                     "floor": ("#7f7f7f", [(p["slabs"], p["floor_s"]) for p in points])},
                    "Hit mount: slabvol against its floor (emulated VM)")


def load_summary(text):
    """bench/run's load samples: the 1-minute load (min, mean, max) and how often each
    process name was among the busiest."""
    loads, busiest = [], {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "load":
            loads.append(float(words[1]))
        elif len(words) == 2:
            busiest[words[1]] = busiest.get(words[1], 0) + 1
    if not loads:
        return {}
    top = sorted(busiest.items(), key=lambda kv: -kv[1])[:8]
    return {"load_min": min(loads), "load_mean": round(sum(loads) / len(loads), 2),
            "load_max": max(loads), "load_samples": len(loads),
            "busiest": {name: count for name, count in top}}


# -- host side ---------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json")
    parser.add_argument("--load-before", default=None)
    parser.add_argument("--load-after", default=None)
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    parser.add_argument("--source", default=None, help="the checkout measured (git describe)")
    parser.add_argument("--load-file", default=None,
                        help="bench/run's samples: lines 'load L HH:MM:SS' and top processes")
    args = parser.parse_args(argv)
    with open(args.json) as handle:
        result = json.load(handle)
    host = result.setdefault("host", {})
    for key in ("load_before", "load_after", "source"):
        if getattr(args, key) is not None:
            host[key] = getattr(args, key)
    if args.load_file and os.path.exists(args.load_file):
        with open(args.load_file) as handle:
            host.update(load_summary(handle.read()))
    with open(args.json, "w") as handle:
        json.dump(result, handle, indent=2)
    svg_path = os.path.join(os.path.dirname(os.path.abspath(args.json)), "bench.svg")
    if result.get("scale", {}).get("points"):
        with open(svg_path, "w") as handle:
            handle.write(scale_plot(result))
    if args.markdown:
        print(markdown(rows(result)) + "\n\n" + markdown_phases(result))
        return 0
    print(format_table(rows(result)))
    print()
    print(format_phases(result))
    if host:
        print()
        print("\n".join(f"host {k}: {v}" for k, v in host.items()))
    print(f"\nwrote {args.json}" + (f" and {svg_path}" if os.path.exists(svg_path) else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
