"""The slabvol log file: every decision, with sizes and timings; never the kubelet's
stream. (A long-running server, the CSI front end, logs to stderr instead: ``to_stderr``.)

Written on every kubelet call (a new process each), so it stays cheap: the few lines below,
not the logging package, whose import (with traceback, tokenize, string and weakref) costs
a kubelet call more than slabvol's own modules (tests/unit/test_lean_start.py, bench/run).
Lines keep logging's layout: ``2026-12-02 04:45:49,123 4711 INFO slabvol.driver: ...``.
The file is rotated by size, BACKUPS old files kept; a record that would take the file to
``log_max_bytes`` or more first renames it to ``.1`` (``.1`` to ``.2``, ..., the oldest
dropped), as logging.handlers.RotatingFileHandler does. ``log_max_bytes`` 0: never rotated.
"""

import os
import time

BACKUPS = 3
_file = None  # (path, max_bytes) once configure() has opened it; None: logging is off


def configure(config):
    """Log to config.log_file from now on. A log file that cannot be opened must not fail a
    mount: logging is then off, and ``vol_plugin status`` still works."""
    global _file
    _file = None
    try:
        if os.path.dirname(config.log_file):
            os.makedirs(os.path.dirname(config.log_file), exist_ok=True)
        os.close(os.open(config.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
    except OSError:
        return False
    _file = (config.log_file, config.log_max_bytes)
    return True


def to_stderr():
    """Log to standard error from now on (the CSI server, for ``kubectl logs``)."""
    global _file
    _file = (None, 0)


class Logger:
    """``info``, ``warning``, ``error`` and ``exception`` (adds the traceback) take a
    message and %-arguments, as logging's loggers do; a failure to write is never raised."""

    def __init__(self, name):
        self.name = name

    def info(self, message, *args):
        _write(self.name, "INFO", message, args)

    def warning(self, message, *args):
        _write(self.name, "WARNING", message, args)

    def error(self, message, *args):
        _write(self.name, "ERROR", message, args)

    def exception(self, message, *args):
        import traceback  # only when something went wrong

        _write(self.name, "ERROR", message, args, traceback.format_exc().rstrip("\n"))


get = Logger


def _write(name, level, message, args, detail=None):
    if _file is None:
        return
    path, max_bytes = _file
    try:
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        text = message % args if args else message
        line = f"{stamp},{int(now % 1 * 1000):03d} {os.getpid()} {level} {name}: {text}\n"
        if detail:
            line += detail + "\n"
        data = line.encode("utf-8", "backslashreplace")
        if path is None:
            os.write(2, data)
            return
        if max_bytes > 0:
            try:
                if os.stat(path).st_size + len(data) >= max_bytes:
                    _rotate(path)
            except FileNotFoundError:
                pass
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except Exception:  # noqa: BLE001 - as a logging handler: never fail the caller
        pass


def _rotate(path):
    for i in range(BACKUPS - 1, 0, -1):
        if os.path.exists(f"{path}.{i}"):
            os.replace(f"{path}.{i}", f"{path}.{i + 1}")
    if BACKUPS > 0:
        os.replace(path, path + ".1")
    else:
        os.remove(path)
