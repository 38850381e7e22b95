"""The runtime (a virtual environment per source hash, or ``--python``) and the driver
executable, installed atomically where the kubelet finds it."""

import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass
from typing import Optional

from .. import __version__
from ..errors import CommandError, SlabvolError
from ..files import replace_file
from .host import InstallError
from .layout import DRIVER_DIR, EXECUTABLE, SYMLINK, VENV_COMPLETE, VENVS


SHEBANG_MAX = 127  # older kernels cut a #! line after 127 bytes
SOURCE_FILES = ("setup.cfg", "pyproject.toml", "vol_plugin")


def source_files(source):
    files = [f for f in SOURCE_FILES if os.path.isfile(os.path.join(source, f))]
    package = os.path.join(source, "src", "slabvol")
    for dirpath, dirnames, filenames in os.walk(package):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                files.append(os.path.relpath(os.path.join(dirpath, name), source))
    return files


def check_source(source):
    missing = [f for f in ("vol_plugin", "setup.cfg", "src/slabvol/__init__.py")
               if not os.path.isfile(os.path.join(source, f))]
    if missing:
        raise InstallError(f"{source} is not a complete slabvol checkout (missing "
                           f"{', '.join(missing)}); run install.sh from the slabvol source tree")


def source_hash(source, python):
    digest = hashlib.sha256()
    digest.update(f"{os.path.realpath(python)} {sys.version}\n".encode())
    for rel in source_files(source):
        digest.update(rel.encode() + b"\0")
        with open(os.path.join(source, rel), "rb") as handle:
            digest.update(handle.read())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


IMPORT_CHECK = "import slabvol, click, psutil; print(slabvol.__version__)"


def _imports_slabvol(host, python):
    """The result of importing slabvol's dependencies with ``python``, and whether it
    printed this checkout's version."""
    check = host.query([python, "-c", IMPORT_CHECK])
    return check, check.ok and check.stdout.strip() == __version__


@dataclass
class Runtime:
    python: str  # the interpreter for the #! line (a host path)
    venv: Optional[str] = None  # host path of the venv, if we build one
    ready: bool = False
    interpreter: str = ""  # ``python`` as install.sh runs it (under --root)

    @property
    def flags(self):
        """The interpreter's flags in the driver's #! line: our venv's python runs with -S
        (no site: vol_plugin adds the venv's site-packages itself), a --python keeps site."""
        return ["-S"] if self.venv else []

    def driver_argv(self, executable, *args):
        """Run the installed driver (a host path) the way its #! line, and so the kubelet,
        runs it."""
        return [self.interpreter, *self.flags, executable, *args]


def plan_runtime(host, opts):
    if opts.python:
        check, current = _imports_slabvol(host, opts.python)
        if not check.ok:
            raise InstallError(
                f"--python {opts.python} cannot import slabvol, click and psutil "
                f"({(check.stderr.strip().splitlines() or ['?'])[-1]}); install them into it "
                f"(`{opts.python} -m pip install {opts.source}`) or leave out --python to let "
                f"install.sh build a virtual environment")
        if not current:
            version = check.stdout.strip()
            host.warn(f"--python {opts.python} has slabvol {version}, this checkout is "
                      f"{__version__}; the driver will run slabvol {version}")
        return Runtime(opts.python, ready=True, interpreter=opts.python)
    venv = f"{opts.prefix}/{VENVS}/{__version__}-{source_hash(opts.source, sys.executable)}"
    runtime = Runtime(f"{venv}/bin/python", venv, interpreter=host.path(f"{venv}/bin/python"))
    if os.path.exists(host.path(f"{venv}/{VENV_COMPLETE}")):
        runtime.ready = _imports_slabvol(host, runtime.interpreter)[1]
    return runtime


def build_runtime(host, opts, runtime):
    if runtime.ready:
        host.same(f"runtime {runtime.venv or runtime.python}")
        return
    venv = runtime.venv
    host.remove(venv, f"removed incomplete virtual environment {venv}", tree=True)
    host.make_dirs(f"{opts.prefix}/{VENVS}")
    host.change([sys.executable, "-m", "venv", host.path(venv)],
                f"created virtual environment {venv} (Python {sys.version.split()[0]})")
    pip = [runtime.interpreter, "-m", "pip", "install", "--no-input",
           "--disable-pip-version-check", "--no-cache-dir"]
    if opts.wheelhouse:
        pip += ["--no-index", "--find-links", opts.wheelhouse]
    wheel = f"slabvol-{__version__}-"
    with tempfile.TemporaryDirectory(prefix="slabvol-build-") as scratch:
        if opts.wheelhouse and any(n.startswith(wheel) and n.endswith(".whl")
                                   for n in os.listdir(opts.wheelhouse)):
            pip.append(f"slabvol=={__version__}")
        else:
            # Build from a scratch copy so the checkout stays clean (pip builds in-tree).
            copy_source(opts.source, scratch)
            pip.append(scratch)
        try:
            host.change(pip, "installed slabvol and its dependencies into it" +
                        (f" from {opts.wheelhouse}" if opts.wheelhouse else ""))
            check, ok = (None, True) if host.dry_run else \
                _imports_slabvol(host, runtime.interpreter)
            if not ok:
                raise InstallError(f"the new virtual environment {venv} does not import "
                                   f"slabvol {__version__}: "
                                   f"{check.stderr.strip() or check.stdout.strip()}")
        except SlabvolError as exc:
            if not host.dry_run and os.path.exists(host.path(venv)):
                shutil.rmtree(host.path(venv))
            hint = ("" if opts.wheelhouse else " If this node has no internet access, build a "
                    "wheelhouse where there is (`deploy/build-wheelhouse DIR` from a slabvol "
                    "checkout), copy it here and pass --wheelhouse DIR.")
            detail = exc.stderr.strip().splitlines()[-3:] if isinstance(exc, CommandError) \
                else [str(exc)]
            raise InstallError(f"could not install slabvol into {venv}: "
                               f"{' / '.join(detail)}.{hint} Nothing else was changed.") \
                from None
    if not host.dry_run:
        with open(host.path(f"{venv}/{VENV_COMPLETE}"), "w", encoding="utf-8") as handle:
            handle.write(__version__ + "\n")


def copy_source(source, dest):
    for rel in source_files(source) + ["README.md"]:
        src = os.path.join(source, rel)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, rel))


def remove_old_venvs(host, prefix, keep):
    for name in host.listdir(f"{prefix}/{VENVS}"):
        venv = f"{prefix}/{VENVS}/{name}"
        if venv != keep:
            host.remove(venv, f"removed old virtual environment {venv}", tree=True)


def render_executable(source, runtime):
    """The driver executable for ``runtime``: vol_plugin under its #! line."""
    with open(os.path.join(source, EXECUTABLE), encoding="utf-8") as handle:
        text = handle.read()
    first, _, rest = text.partition("\n")
    if not first.startswith("#!"):
        raise InstallError(f"{source}/{EXECUTABLE} does not start with a #! line")
    line = " ".join([f"#!{runtime.python}", *runtime.flags])
    if len(line) > SHEBANG_MAX:
        raise InstallError(f"the interpreter path {runtime.python} is too long for a #! line "
                           f"({len(line)} > {SHEBANG_MAX} characters); use a shorter --prefix")
    return line + "\n" + rest


def install_executable(host, plugin_dir, content, runtime):
    """Put the driver at <plugin_dir>/ax~vol_plugin/vol_plugin, checked with ``init``
    before it replaces the old one (docs/operations.md, install step 5)."""
    driver_dir = f"{plugin_dir}/{DRIVER_DIR}"
    final = f"{driver_dir}/{EXECUTABLE}"
    final_path = host.path(final)
    if host.read_text(final) == content and stat.S_IMODE(os.stat(final_path).st_mode) == 0o755:
        host.same(final)
        return final
    host.make_dirs(plugin_dir)
    host.make_dirs(driver_dir)

    def answers_init(tmp):
        check = host.query(runtime.driver_argv(tmp, "init"))
        try:
            status = json.loads(check.stdout).get("status")
        except (ValueError, AttributeError):
            status = None
        if status != "Success":
            raise InstallError(f"the new driver does not answer `init` correctly (exit "
                               f"{check.returncode}: "
                               f"{(check.stdout.strip() or check.stderr.strip())[:300]}); "
                               f"the installed one, if any, was left in place")
    host.apply(f"installed {final} (runs {runtime.python})", replace_file, final_path, content,
               0o755, True, answers_init)
    return final


def install_symlink(host, target):
    link = host.path(SYMLINK)
    current = os.readlink(link) if os.path.islink(link) else None
    instead = f"`{target} status` instead of `vol_plugin status`"
    if current == target:
        host.same(f"{SYMLINK} -> {target}")
    elif current and os.path.basename(current) != EXECUTABLE:
        host.warn(f"{SYMLINK} points at {current}, not at the driver; left alone. Run {instead}")
    elif not current and os.path.lexists(link):
        host.warn(f"{SYMLINK} exists and is not a symlink; left alone. Run {instead}")
    else:
        host.apply(f"linked {SYMLINK} -> {target}", _symlink, host, target, link, instead)


def _symlink(host, target, link, instead):
    tmp = f"{link}.tmp-{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, link)
    except OSError as exc:
        if os.path.lexists(tmp):
            os.remove(tmp)
        host.warn(f"could not create {SYMLINK} ({exc.strerror}); run {instead}")
