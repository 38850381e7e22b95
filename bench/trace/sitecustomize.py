"""Bench-only tracing hook (never installed on a node): bench.py puts this directory on
PYTHONPATH of a few driver calls, so the interpreter imports it at start-up.

With SLABVOL_BENCH_TRACE=<file> set, it appends one JSON line per event to that file:
``start`` (the interpreter has initialised, before the driver's first import), ``spawn``
and ``reaped`` for every child process (argv, wall-clock time), and ``exit``. The bench
turns these into phases (interpreter, start-up, each command, the driver's own work
between commands, exit). Nothing in the driver changes; subprocess is patched lazily, the
first time something imports it, so the hook adds no import of its own to the driver's
start-up."""

import os
import sys
import time

_PATH = os.environ.get("SLABVOL_BENCH_TRACE")


def _emit(event, **fields):
    import json

    fields.update(event=event, t=time.time(), pid=os.getpid())
    try:
        with open(_PATH, "a") as handle:
            handle.write(json.dumps(fields) + "\n")
    except OSError:
        pass


def _patch(subprocess):
    popen = subprocess.Popen
    init, handle_exit = popen.__init__, popen._handle_exitstatus

    def traced_init(self, args, *rest, **kwargs):
        self._bench_argv = [str(a) for a in args] if isinstance(args, (list, tuple)) \
            else [str(args)]
        _emit("spawn", argv=self._bench_argv)
        init(self, args, *rest, **kwargs)

    def traced_exit(self, *args, **kwargs):
        result = handle_exit(self, *args, **kwargs)
        _emit("reaped", argv=getattr(self, "_bench_argv", []), rc=self.returncode)
        return result

    popen.__init__ = traced_init
    popen._handle_exitstatus = traced_exit


class _PatchOnImport:
    """A meta-path finder that patches subprocess right after its first import."""

    def find_spec(self, name, path=None, target=None):
        if name != "subprocess":
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(name)
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch(module)
        spec.loader = type("Patched", (), {"create_module": loader.create_module,
                                           "exec_module": staticmethod(exec_and_patch)})()
        return spec


if _PATH:
    _emit("start", argv=sys.argv)
    if "subprocess" in sys.modules:
        _patch(sys.modules["subprocess"])
    else:
        sys.meta_path.insert(0, _PatchOnImport())
    import atexit

    atexit.register(lambda: _emit("exit"))
