"""Bench-only tracing hook (never installed on a node): bench.py puts this directory on
PYTHONPATH of a few driver calls, so the interpreter imports it at start-up.

With SLABVOL_BENCH_TRACE=<file> set, it appends one JSON line per event to that file:
``start`` (the interpreter has initialised, before the driver's first import), ``spawn``
and ``reaped`` for every child process (argv, wall-clock time), and ``exit``. The bench
turns these into phases (interpreter, start-up, each command, the driver's own work
between commands, exit: the caller's time after the last command). Nothing in the driver
changes: the hook wraps os.posix_spawn and os.waitpid, which the driver's runner uses."""

import os
import sys
import time

_PATH = os.environ.get("SLABVOL_BENCH_TRACE")


def _emit(event, **fields):
    fields.update(event=event, t=time.time(), pid=os.getpid())
    import json  # (after the time: the driver imports it anyway, in its start-up)

    try:
        with open(_PATH, "a") as handle:
            handle.write(json.dumps(fields) + "\n")
    except OSError:
        pass


def _patch_os():
    """The driver starts programs with os.posix_spawn and reaps them with os.waitpid
    (slabvol.process): a ``spawn`` event per start, a ``reaped`` one when waitpid returns
    the child."""
    spawn, waitpid = os.posix_spawn, os.waitpid
    started = {}

    def traced_spawn(path, argv, *args, **kwargs):
        argv = [str(a) for a in argv]
        _emit("spawn", argv=argv)
        pid = spawn(path, argv, *args, **kwargs)
        started[pid] = argv
        return pid

    def traced_waitpid(pid, options):
        done, status = waitpid(pid, options)
        if done in started:
            _emit("reaped", argv=started.pop(done), rc=os.waitstatus_to_exitcode(status))
        return done, status

    os.posix_spawn, os.waitpid = traced_spawn, traced_waitpid


if _PATH:
    _emit("start", argv=sys.argv)
    _patch_os()
