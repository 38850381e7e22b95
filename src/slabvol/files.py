"""Files that other programs read while slabvol rewrites them (the metrics file, the NFD
feature file): always replaced whole, so a reader sees the old text or the new, never half.
"""

import os


def replace_file(path, text, mode=0o644):
    """Write ``text`` to ``path`` atomically: a dot-file in the same dir (node-exporter and
    NFD skip those), renamed over ``path``. Never follows a symlink at the temp name."""
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    try:  # left by a killed process that had our pid
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)  # not narrowed by the umask
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_text(path):
    """The file's text, or None when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError):
        return None
