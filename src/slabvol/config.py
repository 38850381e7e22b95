"""Node configuration: an INI file, section [slabvol]; a missing file means defaults."""

import configparser
import os
import re
from collections import namedtuple

from .errors import ConfigError
from .policy import SCOPES

DEFAULT_PATH = "/etc/slabvol/slabvol.conf"
ENV_VAR = "SLABVOL_CONFIG"
SECTION = "slabvol"
# The warm-cache labels a node publishes (labels.py): at most nfd_max_warm of them. NFD
# ignores a feature file bigger than 64 KiB (source/local/local.go, MaxFeatureFileSize); a
# warm line is under 50 bytes, so MAX_WARM_LIMIT keeps the file far below it.
DEFAULT_MAX_WARM = 16
MAX_WARM_LIMIT = 512
_VG_NAME = re.compile(r"[A-Za-z0-9+_.][A-Za-z0-9+_.\-]*")


# Every key, with its default; a key's type is its default's (int, float or str). path: the
# file the config was read from.
DEFAULTS = {
    "volume_group": "slabvol",
    "kubelet_dir": "/var/lib/kubelet",
    "prune_used_percent": 50.0,
    "cache_scope": "namespace",
    "log_file": "/var/log/slabvol.log",
    "log_max_bytes": 10 * 1024 * 1024,
    "lock_file": "/run/slabvol/slabvol.lock",  # a root-only dir (see lock.py)
    "lock_timeout": 60.0,
    "metrics_file": "",
    # Node Feature Discovery: the feature file this node's warm caches and room are
    # published in (labels.py); "" = off. NFD reads /etc/kubernetes/node-feature-discovery/
    # features.d/ by default.
    "nfd_features_file": "",
    "nfd_max_warm": DEFAULT_MAX_WARM,
}
Config = namedtuple("Config", [*DEFAULTS, "path"], defaults=(*DEFAULTS.values(), ""))


def config_path(environ=None):
    environ = os.environ if environ is None else environ
    return environ.get(ENV_VAR) or DEFAULT_PATH


def load(path=None, environ=None):
    """Read the config; raise ConfigError naming the file (and line) on any problem."""
    path = path or config_path(environ)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle, source=path)
    except FileNotFoundError:
        return Config(path=path)
    except configparser.Error as exc:
        raise ConfigError(f"config file {path} is broken: {_one_line(exc)}; fix it or move it "
                          f"away to use the defaults") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    if parser.sections() and not parser.has_section(SECTION):
        raise ConfigError(f"config file {path} has no [{SECTION}] section "
                          f"(found {', '.join('[%s]' % s for s in parser.sections())})")
    values = dict(parser.items(SECTION)) if parser.has_section(SECTION) else {}
    return _build(path, values)


def _one_line(exc):
    return " ".join(str(exc).split())


def _build(path, values):
    unknown = sorted(set(values) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"config file {path}: unknown key(s) {', '.join(unknown)} in "
                          f"[{SECTION}]; known keys: {', '.join(DEFAULTS)}")
    kwargs = {"path": path}
    for key, text in values.items():
        text = text.strip()
        try:
            kwargs[key] = type(DEFAULTS[key])(text)
        except ValueError:
            raise ConfigError(f"config file {path}: {key} = {text!r} is not a number") from None
    config = Config(**kwargs)
    _check(config)
    return config


def _check(c):
    problems = []
    if not _VG_NAME.fullmatch(c.volume_group) or c.volume_group in (".", ".."):
        problems.append(f"volume_group = {c.volume_group!r} is not a valid LVM name")
    if not os.path.isabs(c.kubelet_dir):
        problems.append(f"kubelet_dir = {c.kubelet_dir!r} must be an absolute path")
    if not 0 <= c.prune_used_percent <= 100:
        problems.append(f"prune_used_percent = {c.prune_used_percent} must be within 0..100")
    if c.cache_scope not in SCOPES:
        problems.append(f"cache_scope = {c.cache_scope!r} must be one of {', '.join(SCOPES)}")
    if not 0 < c.lock_timeout < float("inf"):  # (NaN is refused too: no comparison holds)
        problems.append(f"lock_timeout = {c.lock_timeout} must be a finite positive number "
                        f"of seconds")
    if c.nfd_features_file and not os.path.isabs(c.nfd_features_file):
        problems.append(f"nfd_features_file = {c.nfd_features_file!r} must be an absolute path "
                        f"(or empty: off)")
    if c.nfd_features_file and os.path.basename(c.nfd_features_file).startswith("."):
        problems.append(f"nfd_features_file = {c.nfd_features_file!r}: NFD skips dot-files")
    if not 0 <= c.nfd_max_warm <= MAX_WARM_LIMIT:
        problems.append(f"nfd_max_warm = {c.nfd_max_warm} must be within 0..{MAX_WARM_LIMIT}")
    if not os.path.isabs(c.lock_file):
        problems.append(f"lock_file = {c.lock_file!r} must be an absolute path")
    if problems:
        raise ConfigError(f"config file {c.path}: " + "; ".join(problems))
