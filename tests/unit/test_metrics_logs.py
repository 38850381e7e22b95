"""The Prometheus textfile output and the log file set-up."""

import json
import os
import re
import stat

import pytest

from slabvol import logs, metrics
from slabvol.config import Config

STATUS = {
    "volume_group": {"name": "slabvol", "size_mb": 10240, "free_mb": 7168},
    "slabs": [{"state": "in-use", "size_mb": 1024}, {"state": "free", "size_mb": 1024},
              {"state": "free", "size_mb": 512}, {"state": "creating", "size_mb": None}],
}
SAMPLE = re.compile(r'[a-z_]+\{vg="slabvol"(,state="[a-z-]+")?\} [0-9]+')


def samples(text):
    return dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))


def test_render_reports_the_vg_in_bytes():
    out = samples(metrics.render(STATUS, {}))
    assert out['slabvol_vg_size_bytes{vg="slabvol"}'] == str(10240 * 1048576)
    assert out['slabvol_vg_free_bytes{vg="slabvol"}'] == str(7168 * 1048576)


def test_render_counts_slabs_and_bytes_by_state():
    out = samples(metrics.render(STATUS, {}))
    assert out['slabvol_slabs{vg="slabvol",state="free"}'] == "2"
    assert out['slabvol_slabs{vg="slabvol",state="in-use"}'] == "1"
    assert out['slabvol_slabs{vg="slabvol",state="creating"}'] == "1"
    assert out['slabvol_slab_bytes{vg="slabvol",state="free"}'] == str(1536 * 1048576)
    assert out['slabvol_slab_bytes{vg="slabvol",state="creating"}'] == "0"


def test_render_always_reports_free_and_in_use_even_with_no_slabs():
    out = samples(metrics.render({"volume_group": STATUS["volume_group"], "slabs": []}, {}))
    assert out['slabvol_slabs{vg="slabvol",state="free"}'] == "0"
    assert out['slabvol_slabs{vg="slabvol",state="in-use"}'] == "0"


def test_render_reports_every_counter_defaulting_to_zero():
    out = samples(metrics.render(STATUS, {"hit": 3, "evicted": 2}))
    assert out['slabvol_mount_hits_total{vg="slabvol"}'] == "3"
    assert out['slabvol_evictions_total{vg="slabvol"}'] == "2"
    assert out['slabvol_mount_misses_total{vg="slabvol"}'] == "0"
    assert out['slabvol_failures_total{vg="slabvol"}'] == "0"


def test_render_is_valid_textfile_format():
    text = metrics.render(STATUS, {"miss": 1})
    assert text.endswith("\n")
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert lines[i + 1].startswith(f"# TYPE {name} ")
        elif not line.startswith("#"):
            assert SAMPLE.fullmatch(line), line


class FakeDriver:
    def __init__(self, status=STATUS):
        self._status = status

    def current(self):
        if isinstance(self._status, Exception):
            raise self._status
        return "the view"

    def status(self, snap=None):
        assert snap == "the view"  # the VG as the call left it, not a new report
        return self._status


def test_record_does_nothing_without_a_metrics_file(tmp_path):
    metrics.record(Config(metrics_file=""), FakeDriver(), "hit")
    assert os.listdir(tmp_path) == []


def test_record_counts_across_calls_and_writes_the_file(tmp_path):
    config = Config(metrics_file=str(tmp_path / "slabvol.prom"))
    metrics.record(config, FakeDriver(), "hit")
    metrics.record(config, FakeDriver(), "hit")
    metrics.record(config, FakeDriver(), "miss", evicted=2)
    metrics.record(config, FakeDriver(), "noop")
    out = samples((tmp_path / "slabvol.prom").read_text())
    assert out['slabvol_mount_hits_total{vg="slabvol"}'] == "2"
    assert out['slabvol_mount_misses_total{vg="slabvol"}'] == "1"
    assert out['slabvol_evictions_total{vg="slabvol"}'] == "2"
    assert json.loads((tmp_path / "slabvol.prom.counters").read_text()) == {
        "evicted": 2, "hit": 2, "miss": 1}


def test_record_survives_a_corrupt_counters_file(tmp_path):
    (tmp_path / "slabvol.prom.counters").write_text("{not json")
    metrics.record(Config(metrics_file=str(tmp_path / "slabvol.prom")), FakeDriver(), "prune")
    assert samples((tmp_path / "slabvol.prom").read_text())[
        'slabvol_prunes_total{vg="slabvol"}'] == "1"


def test_record_never_raises(tmp_path):
    config = Config(metrics_file=str(tmp_path / "slabvol.prom"))
    metrics.record(config, FakeDriver(RuntimeError("vgs died")), "failure")
    assert not (tmp_path / "slabvol.prom").exists()
    metrics.record(Config(metrics_file=str(tmp_path / "no" / "dir" / "m.prom")), FakeDriver(),
                   "hit")


# -- logs -------------------------------------------------------------------------------

def test_configure_logs_to_the_file(tmp_path):
    config = Config(log_file=str(tmp_path / "log" / "slabvol.log"))
    assert logs.configure(config)
    logs.get("slabvol.driver").info("create %s", "slab_1")
    text = (tmp_path / "log" / "slabvol.log").read_text()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \d+ INFO slabvol.driver: "
                        r"create slab_1\n", text), text


def test_an_exception_is_logged_with_its_traceback(tmp_path):
    logs.configure(Config(log_file=str(tmp_path / "slabvol.log")))
    try:
        raise RuntimeError("vgs died")
    except RuntimeError:
        logs.get("slabvol.flex").exception("mount failed with an unexpected error")
    text = (tmp_path / "slabvol.log").read_text()
    assert " ERROR slabvol.flex: mount failed with an unexpected error\nTraceback" in text
    assert text.endswith("RuntimeError: vgs died\n")


def test_an_unwritable_log_file_turns_logging_off_without_an_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    assert not logs.configure(Config(log_file=str(tmp_path / "afile" / "slabvol.log")))
    logs.get("slabvol.driver").error("nobody hears this")
    assert capsys.readouterr() == ("", "")
    assert os.listdir(tmp_path) == ["afile"]


def test_configure_twice_writes_each_line_once(tmp_path):
    config = Config(log_file=str(tmp_path / "slabvol.log"))
    logs.configure(config)
    logs.configure(config)
    logs.get("slabvol").info("once")
    assert (tmp_path / "slabvol.log").read_text().count("once") == 1


def test_the_log_file_is_rotated_by_size(tmp_path):
    config = Config(log_file=str(tmp_path / "slabvol.log"), log_max_bytes=200)
    logs.configure(config)
    for i in range(100):
        logs.get("slabvol").info("line %d", i)
    assert sorted(os.listdir(tmp_path)) == [
        "slabvol.log", "slabvol.log.1", "slabvol.log.2", "slabvol.log.3"]


def test_rotation_keeps_the_newest_lines_newest_first(tmp_path):
    logs.configure(Config(log_file=str(tmp_path / "slabvol.log"), log_max_bytes=200))
    for i in range(100):
        logs.get("slabvol").info("line %d", i)
    texts = [(tmp_path / name).read_text() for name in
             ("slabvol.log", "slabvol.log.1", "slabvol.log.2", "slabvol.log.3")]
    numbers = [[int(line.rsplit(" ", 1)[1]) for line in text.splitlines()] for text in texts]
    assert numbers[0][-1] == 99
    assert numbers[3] + numbers[2] + numbers[1] + numbers[0] == list(
        range(99 - sum(map(len, numbers)) + 1, 100))
    assert all(0 < len(t.encode()) < 200 for t in texts)

