"""The node configuration file (on pyfakefs)."""

import re

import pytest

from slabvol.config import Config, load
from slabvol.errors import ConfigError

PATH = "/etc/slabvol/slabvol.conf"


@pytest.fixture
def write(fs):
    def write(text, path=PATH):
        fs.create_file(path, contents=text)
        return path
    return write


def test_a_missing_file_means_the_documented_defaults(fs):
    c = load(PATH)
    assert c == Config(path=PATH)
    assert (c.volume_group, c.kubelet_dir, c.prune_used_percent, c.cache_scope, c.log_file) == (
        "slabvol", "/var/lib/kubelet", 50.0, "namespace", "/var/log/slabvol.log")


def test_slabvol_config_points_at_another_file(write):
    path = write("[slabvol]\nvolume_group = other\n", "/srv/my.conf")
    config = load(environ={"SLABVOL_CONFIG": path})
    assert (config.volume_group, config.path) == ("other", "/srv/my.conf")


@pytest.mark.parametrize("environ", [{}, {"SLABVOL_CONFIG": ""}], ids=["unset", "empty"])
def test_without_slabvol_config_etc_slabvol_is_read(write, environ):
    write("[slabvol]\nvolume_group = fromdefault\n")
    config = load(environ=environ)
    assert (config.volume_group, config.path) == ("fromdefault", "/etc/slabvol/slabvol.conf")


def test_every_key_is_read_and_typed(write):
    write("[slabvol]\nvolume_group = vg0\nkubelet_dir = /data/kubelet\n"
          "prune_used_percent = 70\ncache_scope = node\nlog_file = /tmp/s.log\n"
          "log_max_bytes = 1000\nlock_file = /tmp/s.lock\nlock_timeout = 5\n"
          "metrics_file = /tmp/m.prom\n")
    assert load(PATH) == Config(volume_group="vg0", kubelet_dir="/data/kubelet",
                                prune_used_percent=70.0, cache_scope="node",
                                log_file="/tmp/s.log", log_max_bytes=1000,
                                lock_file="/tmp/s.lock", lock_timeout=5.0,
                                metrics_file="/tmp/m.prom", path=PATH)


def test_an_empty_file_means_the_defaults(write):
    write("")
    assert load(PATH) == Config(path=PATH)


def test_a_line_without_a_value_names_the_file_and_the_line(write):
    write("[slabvol]\nvolume_group = vg0\nthis is not ini\n")
    with pytest.raises(ConfigError) as caught:
        load(PATH)
    message = str(caught.value)
    assert message.startswith(f"config file {PATH} is broken")
    assert re.search(r"line:? 3\b", message), message
    assert "\n" not in message


def test_a_file_without_a_section_header_names_the_file_and_the_line(write):
    write("volume_group = vg0\n")
    with pytest.raises(ConfigError, match=rf"{PATH} is broken.*line:? 1\b"):
        load(PATH)


def test_a_duplicate_key_names_the_file_and_the_line(write):
    write("[slabvol]\nvolume_group = a\nvolume_group = b\n")
    with pytest.raises(ConfigError, match=rf"{PATH} is broken.*line:? 3\b"):
        load(PATH)


def test_a_file_with_only_another_section_is_refused(write):
    write("[other]\nvolume_group = x\n")
    with pytest.raises(ConfigError, match=r"has no \[slabvol\] section \(found \[other\]\)"):
        load(PATH)


def test_an_unknown_key_is_refused_with_the_known_ones(write):
    write("[slabvol]\nvolume_grup = vg0\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) volume_grup in \[slabvol\]; "
                                          r"known keys: volume_group, kubelet_dir"):
        load(PATH)


@pytest.mark.parametrize("line, expected", [
    ("cache_scope = cluster", "cache_scope = 'cluster' must be one of namespace, node"),
    ("prune_used_percent = half", "prune_used_percent = 'half' is not a number"),
    ("prune_used_percent = 101", "prune_used_percent = 101.0 must be within 0..100"),
    ("prune_used_percent = -1", "prune_used_percent = -1.0 must be within 0..100"),
    ("volume_group = my vg", "volume_group = 'my vg' is not a valid LVM name"),
    ("volume_group = -vg", "volume_group = '-vg' is not a valid LVM name"),
    ("volume_group = vg/x", "volume_group = 'vg/x' is not a valid LVM name"),
    ("kubelet_dir = var/lib/kubelet", "kubelet_dir = 'var/lib/kubelet' must be an absolute path"),
    ("lock_timeout = 0", "lock_timeout = 0.0 must be a finite positive number"),
    ("lock_timeout = inf", "lock_timeout = inf must be a finite positive number"),
    ("lock_timeout = nan", "lock_timeout = nan must be a finite positive number"),
    ("lock_file = run/x.lock", "lock_file = 'run/x.lock' must be an absolute path"),
    ("log_max_bytes = 1.5", "log_max_bytes = '1.5' is not a number"),
])
def test_a_bad_value_is_refused_naming_the_file_and_the_value(write, line, expected):
    write(f"[slabvol]\n{line}\n")
    with pytest.raises(ConfigError) as caught:
        load(PATH)
    assert str(caught.value).startswith(f"config file {PATH}: ")
    assert expected in str(caught.value)


def test_an_unreadable_file_is_refused_naming_it(fs):
    fs.create_dir(PATH)
    with pytest.raises(ConfigError, match=f"config file {PATH} cannot be read"):
        load(PATH)


def test_a_file_that_is_not_utf8_is_refused_naming_it(fs):
    fs.create_file(PATH, contents=b"[slabvol]\nvolume_group = \xff\xfe\n")
    with pytest.raises(ConfigError, match=f"config file {PATH} cannot be read"):
        load(PATH)
