"""The edge, and the only module that writes to stdout.

Two faces share one executable:

* kubelet verbs (``init``, ``mount``, ``unmount`` and anything else the kubelet may
  send): exactly one JSON object on stdout, nothing on stderr, exit 0 on Success and 1
  otherwise. While the verb runs, file descriptors 1 and 2 point at /dev/null, so no
  stray byte from any library or child can reach the kubelet's parser.
* human commands (``status``, ``gc``, ``--help``, ``--version``): a click CLI.
"""

import json
import os
import sys

HUMAN = ("status", "gc", "affinity", "--help", "-h", "--version", "help")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in HUMAN:
        return human(argv)
    return flex_main(argv)


def flex_main(argv, environ=None):
    out_fd = _result_fd()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    if devnull > 2:  # (with 0 closed it landed on 0: keep it there, as stdin)
        os.close(devnull)
    try:
        from .flex import FAILURE, exit_code, handle
        try:
            out = handle(argv, environ)
        except BaseException as exc:  # noqa: BLE001 - nothing may escape the protocol
            out = {"status": FAILURE, "message": f"internal error: {type(exc).__name__}: {exc}"}
        code = exit_code(out)
    except BaseException as exc:  # noqa: BLE001 - even an import failure is one JSON object
        out, code = {"status": "Failure", "message": f"internal error: {exc!r}"}, 1
    data = (json.dumps(out) + "\n").encode()
    try:
        while data:
            data = data[os.write(out_fd, data):]
        os.close(out_fd)
    except (OSError, TypeError):  # nowhere to write (out_fd None) or the reader is gone
        pass
    return code


def _result_fd():
    """Where the one JSON object goes: a copy of stdout, or of stderr when stdout is closed
    (the kubelet reads both as one stream); None when neither can be written.

    A closed descriptor 1 is not always free: the interpreter may have opened the script
    itself there (read-only), so "writable" is what counts, not "open"."""
    import fcntl

    for fd in (1, 2):
        try:
            mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
        except OSError:
            continue
        if mode in (os.O_WRONLY, os.O_RDWR):  # a copy above 2, which are redirected next
            return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    return None


# -- the human commands ---------------------------------------------------------------

def human(argv):
    import click

    from . import __version__
    from .errors import SlabvolError

    @click.group(context_settings={"help_option_names": ["-h", "--help"]},
                 help="ax/vol_plugin: warm Docker graph storage for Docker-in-Docker pods, "
                      "carved as LVM slabs.\n\nThe kubelet calls `vol_plugin init`, "
                      "`vol_plugin mount DIR JSON` and `vol_plugin unmount DIR`; those print "
                      "one JSON object. The commands below are for people.")
    @click.version_option(__version__, prog_name="vol_plugin (slabvol)")
    def cli():
        pass

    @cli.command(help="Show the volume group and every slab.")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def status(as_json):
        from .lock import lock_state

        config, driver = _driver()
        data = driver.status()
        data["lock"] = lock_state(config.lock_file)  # who holds it while a mount waits
        if as_json:
            click.echo(json.dumps(data, indent=2, sort_keys=True))
        else:
            click.echo(format_status(data))

    @cli.command(help="Repair after crashes and reboots: remove half-created and retired "
                      "slabs, return slabs of vanished pods to the pool, rewrite the metrics "
                      "file. Prints what it changed and what it could not repair (exit 1).")
    def gc():
        from .metrics import record

        config, driver = _driver()
        report = driver.gc()
        record(config, driver, "gc")  # after a reboot, slabs must not stay "in use" there
        for r in report.repaired:
            click.echo(f"{r.action:6} {r.slab.lv_name}: {r.reason}")
        for r, error in report.failed:
            click.echo(f"FAILED {r.slab.lv_name}: could not {r.action} it ({r.reason}): {error}")
        for s in report.held:
            where = "%d:%d" % s.device if s.device else "its device"
            click.echo(f"held   {s.lv_name}: retired, but still open outside the driver; "
                       f"find the holder with `grep -l ' {where} ' /proc/*/mountinfo` "
                       f"and `fuser -v {s.lv_path}`, end it, and run gc again")
        click.echo(f"gc: {len(report.repaired)} slab(s) repaired, {len(report.failed)} failed, "
                   f"{len(report.held)} retired but still held")
        return 1 if report.failed else 0

    @cli.command(help="Print the pod spec's `affinity:` block that sends a pod to a node "
                      "holding its warm cache, as the nodes publish it through Node Feature "
                      "Discovery (nfd_features_file): preferred a node warm for the cache "
                      "key, then one warm for the class (namespace, size, fs), then one "
                      "with room. Needs no LVM and no root; the options are the pod's "
                      "flexVolume options.")
    @click.option("--namespace", required=True, help="The pod's namespace.")
    @click.option("--size-mb", required=True, type=int, help="The pod's size_mb option.")
    @click.option("--fs-type", default="ext4", show_default=True,
                  help="The pod's fsType (ext4 or xfs).")
    @click.option("--cache-key", default="", help="The pod's cache_key option, if any.")
    @click.option("--require-room", is_flag=True,
                  help="Also require a node that publishes room for the slab (nodes without "
                       "slabvol's labels are then not considered).")
    @click.option("--scope", default="namespace", show_default=True,
                  help="The nodes' cache_scope (namespace or node).")
    @click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml",
                  show_default=True)
    def affinity(namespace, size_mb, fs_type, cache_key, require_room, scope, output):
        block = {"affinity": affinity_block(namespace, size_mb, fs_type, cache_key,
                                            require_room, scope)}
        click.echo(json.dumps(block, indent=2) if output == "json" else to_yaml(block))

    @cli.command(name="help", hidden=True)
    @click.pass_context
    def help_(ctx):
        click.echo(ctx.parent.get_help())

    try:
        code = cli.main(args=argv, prog_name="vol_plugin", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        return 1
    except SlabvolError as exc:
        click.echo(f"vol_plugin: {exc}", err=True)
        return 1
    return code if isinstance(code, int) else 0


def _driver():
    from . import config as config_mod
    from .driver import Driver
    from .logs import configure

    config = config_mod.load()
    configure(config)
    return config, Driver(config)


def affinity_block(namespace, size_mb, fs_type, cache_key, require_room, scope):
    """``labels.affinity`` for options checked as the driver checks a pod's."""
    import click

    from . import labels, policy, request

    # the flags as request.problems names them (a person types them: no identity hint)
    spelling = request.Spelling(option="", where="--size-mb", identity=None,
                                names={"size_mb": "--size-mb", "fs_type": "--fs-type",
                                       "cache_key": "--cache-key", "namespace": "--namespace"})
    problems = request.problems(spelling, str(size_mb), fs_type=fs_type,
                                cache_key=cache_key, namespace=namespace)
    if scope not in policy.SCOPES:
        problems.append(f"--scope {scope!r} is not one of {', '.join(policy.SCOPES)}")
    if problems:
        raise click.UsageError("; ".join(problems))
    return labels.affinity(namespace, size_mb, fs_type, cache_key, require_room, scope)


def to_yaml(value, indent=0):
    """YAML for the dicts, lists, strings and ints of a pod spec fragment (strings quoted
    as JSON, which YAML reads as the same strings)."""
    pad = " " * indent
    if isinstance(value, dict):
        out = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                out.append(f"{pad}{key}:\n{to_yaml(item, indent + 2)}")
            else:
                out.append(f"{pad}{key}: {_scalar(item)}")
        return "\n".join(out)
    if isinstance(value, list):
        out = []
        for item in value:
            text = to_yaml(item, indent + 2) if isinstance(item, (dict, list)) else \
                " " * (indent + 2) + _scalar(item)
            out.append(f"{pad}- {text[indent + 2:]}")
        return "\n".join(out)
    return pad + _scalar(value)


def _scalar(value):
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (dict, list)):
        return "{}" if isinstance(value, dict) else "[]"
    return json.dumps(str(value))


def format_status(data):
    from datetime import datetime, timezone

    vg = data["volume_group"]
    lines = [f"volume group {vg['name']}: {vg['size_mb']} MiB, {vg['free_mb']} MiB free, "
             f"{len(data['slabs'])} slab(s)"]
    header = ("SLAB", "SIZE_MB", "FS", "STATE", "NAMESPACE", "POD", "USED", "LAST_USED",
              "USES", "CACHE_KEY", "TYPE")
    rows = [header]
    for s in data["slabs"]:
        last = (datetime.fromtimestamp(s["last_used"], timezone.utc).strftime("%Y-%m-%d %H:%M")
                if s["last_used"] else "-")
        used = f"{s['used_percent']:.0f}%" if s["used_percent"] is not None else "-"
        rows.append((s["lv_name"], str(s["size_mb"]), s["fs_type"], s["state"],
                     s["namespace"] or "-", s["pod_uid"] or "-", used, last,
                     str(s["use_count"]), s["cache_key"] or "-",
                     "anonymous" if s["type"] == "ax-anonymous" else "graph"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    if "lock" in data:
        from .lock import format_lock_state

        lines.append(f"node lock: {format_lock_state(data['lock'])}")
    return "\n".join(lines)
