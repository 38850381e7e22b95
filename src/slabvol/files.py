"""Files that other programs read while slabvol rewrites them (the metrics file, the NFD
feature file, the installed driver and config): always replaced whole, so a reader sees the
old text or the new, never half.
"""

import os


def replace_file(path, text, mode=0o644, durable=False, check=None):
    """Write ``text`` to ``path`` atomically: a dot-file in the same dir (node-exporter and
    NFD skip those), renamed over ``path``. Never follows a symlink at the temp name.

    ``check(temp path)`` runs on the complete file before the rename; if it raises, ``path``
    is left as it was. ``durable``: the file and the dir are fsynced (the installer's files
    must survive a crash; a metrics or labels file is rewritten by the next call anyway)."""
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    try:  # left by a killed process that had our pid
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # not narrowed by the umask
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        fsync_dir(directory)


def fsync_dir(directory):
    """Make a rename in ``directory`` durable (best effort)."""
    try:
        fd = os.open(directory or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_text(path):
    """The file's text, or None when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError):
        return None
