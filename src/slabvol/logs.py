"""The slabvol log file: every decision, with sizes and timings; never stdout/stderr.

Set up on every kubelet call (a new process each), so it stays cheap: the size-rotating
handler is the few lines below, not ``logging.handlers`` (which imports socket, pickle and
queue for handlers slabvol never uses).
"""

import logging
import os

FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
BACKUPS = 3


def configure(config, verbose_stream=None):
    """Log to config.log_file (rotated by size, BACKUPS old files kept).

    A log file that cannot be opened must not fail a mount: logging is then off, and
    ``vol_plugin status`` still works. ``verbose_stream`` is for the human commands.
    """
    logging.raiseExceptions = False
    root = logging.getLogger("slabvol")
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.propagate = False
    try:
        if os.path.dirname(config.log_file):
            os.makedirs(os.path.dirname(config.log_file), exist_ok=True)
        handler = RotatingFile(config.log_file, config.log_max_bytes, BACKUPS)
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    if verbose_stream is not None:
        stream = logging.StreamHandler(verbose_stream)
        stream.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(stream)
    return root


class RotatingFile(logging.FileHandler):
    """Appends to ``path``; a record that would take the file to ``max_bytes`` or more first
    renames it to ``path.1`` (``.1`` to ``.2``, ..., the oldest of ``backups`` dropped), as
    logging.handlers.RotatingFileHandler does. ``max_bytes`` 0: never rotated."""

    def __init__(self, path, max_bytes, backups):
        super().__init__(path, mode="a", encoding="utf-8")
        self.max_bytes = max_bytes
        self.backups = backups

    def emit(self, record):
        try:
            if self.max_bytes > 0 and self.stream is not None:
                text = self.format(record) + self.terminator
                self.stream.seek(0, os.SEEK_END)
                if self.stream.tell() + len(text) >= self.max_bytes and \
                        os.path.isfile(self.baseFilename):
                    self._rotate()
            super().emit(record)
        except Exception:  # noqa: BLE001 - as every logging handler: never fail the caller
            self.handleError(record)

    def _rotate(self):
        self.stream.close()
        self.stream = None
        for i in range(self.backups - 1, 0, -1):
            older = f"{self.baseFilename}.{i}"
            if os.path.exists(older):
                os.replace(older, f"{self.baseFilename}.{i + 1}")
        if self.backups > 0:
            os.replace(self.baseFilename, self.baseFilename + ".1")
        else:
            os.remove(self.baseFilename)
        self.stream = self._open()
