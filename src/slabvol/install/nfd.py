"""install.sh --nfd: the config's ``nfd_features_file`` and the world-readable dir
nfd-worker reads it from (docs/operations.md, install step 4)."""

import configparser
import os
import re
import stat
from dataclasses import dataclass
from typing import Optional

from .. import config as config_mod
from .host import InstallError, write_atomically

KEY = "nfd_features_file"
SET_BY = "# (set by install.sh --nfd)"
NFD_WORKER_USER = 65534
_KEY_LINE = re.compile(r"\s*" + KEY + r"\s*[=:]", re.IGNORECASE)  # configparser lowercases keys
_COMMENTED_KEY = re.compile(r"[#;]\s*" + KEY + r"\s*=.*")
_HEADER = re.compile(r"\s*\[([^\]]+)\]\s*")


@dataclass
class NfdPlan:
    path: str = ""  # the feature file the driver writes ("" = off)
    requested: bool = False  # --nfd was given
    config_text: Optional[str] = None  # the existing config with the key added, if needed


def plan_nfd(host, opts, config):
    """Check everything --nfd needs before anything changes; InstallError if it cannot."""
    conf = config_mod.DEFAULT_PATH
    if not opts.nfd:
        return NfdPlan(path=config.nfd_features_file)
    plan = NfdPlan(path=opts.nfd, requested=True)
    _check_feature_path(host, opts.nfd)
    target = host.path(conf)
    if not os.path.lexists(target):
        return plan  # install_config writes a new config with the key set
    add_it = f"`{KEY} = {opts.nfd}`"
    if os.path.islink(target):
        raise InstallError(f"{conf} is a symlink (to {os.readlink(target)}); install.sh does "
                           f"not edit it. Add the line {add_it} to its [{config_mod.SECTION}] "
                           f"section yourself, or drop --nfd. Nothing was changed")
    text = host.read_text(conf) or ""
    parser = _parse(conf, text)
    value = (parser[config_mod.SECTION] if parser.has_section(config_mod.SECTION)
             else parser.defaults()).get(KEY)
    if value is not None:
        value = value.strip()
        if value == opts.nfd:
            return plan
        where = next((n for n, line in enumerate(text.splitlines(), 1)
                      if _KEY_LINE.match(line)), None)
        raise InstallError(f"{conf}{f' line {where}' if where else ''} already sets {KEY} = "
                           f"{value or '(empty: off)'}; install.sh does not override a setting "
                           f"in the config. To publish to {opts.nfd}, change that line to "
                           f"{add_it}; to keep the setting, drop --nfd. Nothing was changed")
    plan.config_text = with_key(text, opts.nfd)
    # The edited config must mean what the old one meant, plus the key.
    expected = {**_settings(parser), (config_mod.SECTION, KEY): opts.nfd}
    if _settings(_parse(conf, plan.config_text)) != expected:
        raise InstallError(f"cannot add {add_it} to {conf} automatically; add it to its "
                           f"[{config_mod.SECTION}] section yourself. Nothing was changed")
    return plan


def apply_nfd(host, plan, config_existed):
    """The config line (if --nfd adds it), then the feature file's dir."""
    conf = config_mod.DEFAULT_PATH
    if plan.config_text is not None:
        host.apply(f"set {KEY} = {plan.path} in {conf}", _replace_keeping_mode,
                   host.path(conf), plan.config_text)
    elif plan.requested and config_existed:
        host.same(f"{conf} has {KEY} = {plan.path}")
    if plan.path:
        make_feature_dir(host, os.path.dirname(plan.path))


def make_feature_dir(host, directory):
    """Create the dir (and its parents) with mode 0755 whatever the umask; warn about an
    existing one that nfd-worker cannot read."""
    missing = []
    while not os.path.isdir(host.path(directory)):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for new in reversed(missing):
        host.changed(f"created directory {new}")
        if not host.dry_run:
            os.mkdir(host.path(new), 0o755)
            os.chmod(host.path(new), 0o755)  # mkdir's mode is masked by the umask
    if missing:
        return
    mode = stat.S_IMODE(os.stat(host.path(directory)).st_mode)
    if mode & 0o005 != 0o005:
        host.warn(f"{directory} has mode {mode:04o}: nfd-worker runs as user "
                  f"{NFD_WORKER_USER} and cannot read the feature file there, so this node "
                  f"gets no slabvol.io labels; chmod 755 {directory}")
    else:
        host.same(f"{directory} exists")


def publish_once(host, gc_argv, path):
    """Run the new driver's ``gc`` (``gc_argv``) once when the feature file is not there
    yet, so that a pod requiring room can come to a node that has had no mount yet
    (docs/operations.md, install step 4); a failure only warns."""
    if os.path.exists(host.path(path)):
        return
    result = host.apply(f"published this node's labels to {path} (vol_plugin gc)",
                        host.query, gc_argv)
    if result and result.returncode != 0:
        host.warn(f"`vol_plugin gc` did not publish this node's labels (exit "
                  f"{result.returncode}: {(result.stderr.strip() or result.stdout.strip())[:300]}"
                  f"); the driver publishes them after its next mount, unmount or gc. Run "
                  f"`vol_plugin gc` to do it now")


def remove_feature_file(host, config):
    """On uninstall: without the driver nothing keeps the file true, and a pod that requires
    room must not be sent to a node that can no longer mount it."""
    path = config.nfd_features_file
    if path and not host.remove(path, f"removed the NFD feature file {path} (nfd-worker "
                                      f"drops this node's slabvol.io labels)"):
        host.same(f"the NFD feature file {path} is not there")


def with_key(text, path):
    """``text`` (a config) with ``nfd_features_file = path`` added; pure."""
    if text and not text.endswith("\n"):
        text += "\n"
    lines = text.splitlines(keepends=True)
    line = f"{KEY} = {path}\n"
    section = None
    for i, raw in enumerate(lines):  # the commented-out default install.sh wrote
        header = _HEADER.fullmatch(raw.rstrip("\n"))
        if header:
            section = header.group(1)
        elif section == config_mod.SECTION and _COMMENTED_KEY.fullmatch(raw.strip()):
            return "".join(lines[:i] + [line] + lines[i + 1:])
    for i, raw in enumerate(lines):  # right below the section header
        header = _HEADER.fullmatch(raw.rstrip("\n"))
        if header and header.group(1) == config_mod.SECTION:
            return "".join(lines[:i + 1] + [SET_BY + "\n", line] + lines[i + 1:])
    return text + ("\n" if text else "") + f"[{config_mod.SECTION}]\n{SET_BY}\n{line}"


def _check_feature_path(host, path):
    if os.path.isdir(host.path(path)):
        raise InstallError(f"--nfd {path} is a directory; name the file in it, e.g. "
                           f"{path}/slabvol. Nothing was changed")
    parent = os.path.dirname(path)
    while parent != "/":
        if os.path.lexists(host.path(parent)) and not os.path.isdir(host.path(parent)):
            raise InstallError(f"--nfd {path}: {parent} is not a directory. Nothing was "
                               f"changed")
        parent = os.path.dirname(parent)


def _parse(conf, text):
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=conf)
    except configparser.Error as exc:
        raise InstallError(f"config file {conf} is broken: {' '.join(str(exc).split())}; "
                           f"fix it, then run install.sh again. Nothing was changed") from None
    return parser


def _settings(parser):
    return {(s, k): v for s in parser.sections() for k, v in parser.items(s)}


def _replace_keeping_mode(path, text):
    st = os.stat(path)
    write_atomically(path, text, stat.S_IMODE(st.st_mode))
    os.chown(path, st.st_uid, st.st_gid)
