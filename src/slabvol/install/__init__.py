"""install.sh's logic: put slabvol on a node, idempotently and safely.

``install.sh`` only finds a Python >= 3.9 and runs :func:`run` from the checkout with it
(standard library only: this runs before any virtual environment exists). Everything is
checked before anything is changed — the arguments, the prerequisites, the config file,
the plugin dir, the disk or loop file — so bad input gets an error and changes nothing.
Then, in this order:

1. runtime: a virtual environment ``<prefix>/venvs/<version>-<source hash>`` with slabvol,
   click and psutil (or, with ``--python``, an interpreter that already has them); a
   second run with the same source reuses it;
2. volume group: on ``--disk`` (refusing disks that hold anything, unless ``--force``) or
   on a sparse ``--loopback`` file re-attached at boot by ``slabvol-loopback.service``;
   an existing one is left as it is;
3. ``/etc/slabvol/slabvol.conf`` with every key commented out, if there is none;
4. ``<plugin dir>/ax~vol_plugin/vol_plugin``: the checkout's ``vol_plugin`` with its
   ``#!`` pointing at the runtime, written to a temp file in the same dir, checked with
   ``init``, then renamed over the old one (the kubelet may exec it at any moment);
5. ``/usr/local/sbin/vol_plugin`` -> the driver, for ``vol_plugin status`` on the node;
6. ``<prefix>/install.json``: what was installed where, for ``--uninstall``.

External commands go through :class:`slabvol.process.Runner` (queries with ``call``,
changes with ``run``); files are written with plain Python. ``--root DIR`` (or
``SLABVOL_ROOT``) prefixes every file path the installer reads or writes, including
``/proc``, for tests; device paths, ``--python`` and the commands are used as given.

One module per concern: ``options`` (the command line), ``host`` (files, commands, the
change record), ``prereqs``, ``kubelet`` (the plugin dir), ``volume_group``, ``runtime``
(virtual environment and driver executable), ``config_file``, and ``commands``, which runs
the steps in order.
"""

from .commands import main, run


__all__ = ["main", "run"]
