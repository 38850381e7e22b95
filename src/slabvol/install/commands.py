"""install and uninstall, step by step, and the entry point that install.sh calls."""

import json
import os
import sys

from .. import DRIVER_NAME, __version__, config as config_mod
from ..errors import SlabvolError
from .config_file import install_config, read_config
from .host import Host, InstallError, UsageError
from .kubelet import check_writable, detect_kubelet, resolve_plugin_dir
from .layout import DRIVER_DIR, EXECUTABLE, LOOP_UNIT, LOOP_UNIT_FILE, MANIFEST, SYMLINK, VENVS
from .nfd import apply_nfd, plan_nfd, publish_once, remove_feature_file
from .options import parse_args
from .prereqs import check_prerequisites
from .runtime import (build_runtime, check_source, install_executable, install_symlink,
                      plan_runtime, remove_old_venvs, render_executable)
from .volume_group import (apply_volume_group, plan_volume_group, purge_volume_group, slab_report,
                           unit_loop_file)


def read_manifest(host, prefix):
    text = host.read_text(f"{prefix}/{MANIFEST}")
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        host.warn(f"{prefix}/{MANIFEST} is not valid JSON; ignoring it")
        return {}
    return data if isinstance(data, dict) else {}


def install(host, opts, kubelet):
    host.begin("installing")
    check_source(opts.source)
    config = read_config(host)
    config_existed = os.path.lexists(host.path(config_mod.DEFAULT_PATH))
    nfd = plan_nfd(host, opts, config)
    runtime = plan_runtime(host, opts)
    check_prerequisites(host, opts, need_venv=not runtime.ready)
    plugin_dir, why = resolve_plugin_dir(host, opts.plugin_dir, kubelet)
    check_writable(host, plugin_dir)
    content = render_executable(opts.source, runtime)
    if kubelet.root_dir and config_existed and kubelet.root_dir != config.kubelet_dir:
        host.warn(f"the kubelet runs with --root-dir {kubelet.root_dir} but "
                  f"{config.path} has kubelet_dir = {config.kubelet_dir}; every mount will be "
                  f"refused until kubelet_dir matches")
    vg_plan = plan_volume_group(host, opts, config.volume_group)
    host.say(f"plugin dir: {plugin_dir} ({why})")

    host.say("runtime:")
    build_runtime(host, opts, runtime)
    host.say(f"volume group {config.volume_group}:")
    apply_volume_group(host, opts, vg_plan)
    host.say("config:")
    install_config(host, kubelet, nfd.path if nfd.requested else "")
    apply_nfd(host, nfd, config_existed)
    host.say("driver:")
    executable = install_executable(host, plugin_dir, content, runtime)
    install_symlink(host, executable)
    if nfd.path and vg_plan.action != "skip":
        publish_once(host, runtime.driver_argv(host.path(executable), "gc"), nfd.path)
    if runtime.venv:
        remove_old_venvs(host, opts.prefix, runtime.venv)
    previous = read_manifest(host, opts.prefix)
    loop_file = vg_plan.loop_file or previous.get("loopback_file")
    manifest = {"version": __version__, "plugin_dir": plugin_dir, "executable": executable,
                "python": runtime.python, "venv": runtime.venv, "symlink": SYMLINK,
                "volume_group": config.volume_group, "loopback_file": loop_file,
                "loopback_unit": LOOP_UNIT_FILE if loop_file else None}
    host.write_file(f"{opts.prefix}/{MANIFEST}", json.dumps(manifest, indent=2, sort_keys=True)
                    + "\n", f"recorded the installation in {opts.prefix}/{MANIFEST}")

    host.say("")
    host.say(host.made() if host.changes else
             "Nothing changed: slabvol is installed and up to date.")
    host.say(f"""
Next:
  vol_plugin status     # the volume group and its slabs ({executable} status)
  The kubelet (1.8 and later) finds new and upgraded FlexVolume drivers by itself within
  seconds. If pods report 'no volume plugin matched' for {DRIVER_NAME}, restart it:
  systemctl restart kubelet (k3s: systemctl restart k3s or k3s-agent).
  Log: {config.log_file}. Reference: docs/operations.md.""")
    return 0


def uninstall(host, opts, kubelet):
    host.begin("purging" if opts.purge else "uninstalling")
    manifest = read_manifest(host, opts.prefix)
    try:
        config = config_mod.load(host.path(config_mod.DEFAULT_PATH))
    except SlabvolError as exc:
        if opts.purge:
            raise InstallError(f"{exc}; --purge needs the volume group name from it") from None
        host.warn(f"{exc}; using the default volume group name")
        config = config_mod.Config()
    vg = config.volume_group if os.path.exists(host.path(config_mod.DEFAULT_PATH)) \
        else manifest.get("volume_group") or config.volume_group
    plugin_dir = opts.plugin_dir or manifest.get("plugin_dir") \
        or resolve_plugin_dir(host, opts.plugin_dir, kubelet)[0]
    executable = f"{plugin_dir}/{DRIVER_DIR}/{EXECUTABLE}"

    try:
        report = slab_report(host, vg)
    except (SlabvolError, OSError) as exc:
        if opts.purge:
            raise InstallError(f"cannot read volume group {vg}: {exc}; nothing was "
                               f"removed") from None
        host.warn(f"cannot read volume group {vg} ({exc}); not checking for mounted slabs")
        report = None
    names = ", ".join(s.lv_name for s in report[0] if s.open) if report else ""
    if names:  # open: mounted, here or in any other mount namespace
        if opts.purge:
            raise InstallError(f"slabs {names} are mounted (pods are using them); --purge "
                               f"removes no slab in use. Delete those pods or drain the node, "
                               f"then run again. Nothing was removed")
        if not opts.force:
            raise InstallError(f"slabs {names} are mounted: without the driver the kubelet "
                               f"cannot unmount them when their pods end. Delete those pods "
                               f"or drain the node first, or pass --force. Nothing was "
                               f"removed")
        host.warn(f"--force: slabs {names} stay mounted; their pods will hang in "
                  f"Terminating until the driver is back")

    host.say("driver:")
    if not host.remove(executable):
        host.same(f"{executable} is not there")
    host.remove_empty_dir(f"{plugin_dir}/{DRIVER_DIR}")
    link = host.path(SYMLINK)
    if os.path.islink(link) and os.readlink(link) == executable:
        host.remove(SYMLINK)
    remove_feature_file(host, config)

    host.say("runtime:")
    if not host.remove(f"{opts.prefix}/{VENVS}",
                       f"removed the virtual environments in {opts.prefix}/{VENVS}", tree=True):
        host.same(f"no virtual environment in {opts.prefix}")
    host.remove(f"{opts.prefix}/{MANIFEST}")
    host.remove_empty_dir(opts.prefix)

    problem = None
    loop_file = manifest.get("loopback_file") or unit_loop_file(host)
    if opts.purge:
        host.say(f"volume group {vg}:")
        problem = purge_volume_group(host, vg, report, loop_file)
        host.say("config:")
        if problem:  # the config names the volume group the next --purge must find
            host.same(f"{config_mod.DEFAULT_PATH} kept until the purge can finish")
        else:
            host.remove(config_mod.DEFAULT_PATH)
            host.remove_empty_dir(os.path.dirname(config_mod.DEFAULT_PATH))
    host.say("")
    if problem:
        host.warn(problem)
        raise InstallError("the purge is incomplete (see the warnings above); the driver and "
                           "the runtime are removed. Deal with what is left, then run "
                           "./install.sh --uninstall --purge again")
    host.say(host.made())
    if not opts.purge:
        kept = [f"the config {config_mod.DEFAULT_PATH}"]
        if report is not None:
            kept.insert(0, f"volume group {vg} with {len(report[0])} slab(s)")
        if loop_file:
            kept.append(f"the loop file {loop_file} and {LOOP_UNIT}")
        host.say("Kept " + ", ".join(kept) + ". To remove them as well: "
                 "./install.sh --uninstall --purge")
    return 0


def main(argv=None, *, runner=None, processes=None, which=None, stdout=None, stderr=None,
         environ=None):
    """Run install.sh's logic; returns the exit code (0 ok, 1 failed, 2 bad usage)."""
    err = stderr or sys.stderr
    try:
        try:
            opts = parse_args(list(sys.argv[1:] if argv is None else argv), environ)
        except SystemExit as exc:  # --help, --version
            return exc.code or 0
        host = Host(opts.root, runner=runner, dry_run=opts.dry_run, which=which,
                    processes=processes, out=stdout, err=err)
        if host.root == "/" and not opts.dry_run and os.geteuid() != 0:
            raise InstallError("install.sh changes system dirs and LVM: run it as root "
                               "(sudo ./install.sh ...), or try --dry-run first")
        kubelet = detect_kubelet(host)
        if opts.uninstall:
            return uninstall(host, opts, kubelet)
        return install(host, opts, kubelet)
    except SlabvolError as exc:  # UsageError: bad command line
        print(f"install.sh: error: {exc}", file=err)
        return 2 if isinstance(exc, UsageError) else 1
    except OSError as exc:
        print(f"install.sh: error: {exc}; nothing after this step was done. Fix the cause "
              f"and run install.sh again (it picks up where it stopped)", file=err)
        return 1


run = main  # what install.sh and ``python -m slabvol.install`` call
