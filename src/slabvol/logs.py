"""The slabvol log file: every decision, with sizes and timings; never stdout/stderr."""

import logging
import logging.handlers
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
        handler = logging.handlers.RotatingFileHandler(
            config.log_file, maxBytes=config.log_max_bytes, backupCount=BACKUPS,
            encoding="utf-8")
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    if verbose_stream is not None:
        stream = logging.StreamHandler(verbose_stream)
        stream.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(stream)
    return root
