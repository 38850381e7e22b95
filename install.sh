#!/usr/bin/env bash
# install.sh - install the slabvol FlexVolume driver (ax/vol_plugin) on this node.
#
#   sudo ./install.sh --disk /dev/xvdz        # or: --loopback [FILE] [--size 20G]
#   ./install.sh --help                       # every option; docs/operations.md
#
# This wrapper only finds a Python >= 3.9 (--python PY, $PYTHON, python3, python3.X) and
# hands over to slabvol.install, run from this checkout with the standard library only:
# it checks everything first, then builds the virtual environment, the volume group, the
# config and the driver. Run it again to upgrade; it changes only what is out of date.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# sudo and minimal environments may lack the sbin dirs where LVM and util-linux live.
export PATH="${PATH:-/usr/bin:/bin}:/usr/local/sbin:/usr/sbin:/sbin"

say() { printf 'install.sh: %s\n' "$*" >&2; }

how_to_get_python() {
    cat >&2 <<'EOF'
install.sh needs Python 3.9 or newer on the node (the kubelet runs the driver with it).
install.sh finds python3, python3.13 ... python3.9 on PATH by itself, or takes PYTHON=/path.
  Debian 11+, Ubuntu 22.04+:  apt-get install -y python3 python3-venv
  Ubuntu 20.04:               apt-get install -y python3.9 python3.9-venv
  RHEL/Rocky/Alma 8:          dnf install -y python39
  RHEL 9, Fedora, Amazon Linux 2023: dnf install -y python3
  no Python on the host (Flatcar, Fedora CoreOS): unpack a standalone CPython build under /opt
  and run PYTHON=/opt/python/bin/python3 ./install.sh ...
EOF
}

new_enough() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' 2>/dev/null; }

# --python PY / --python=PY names the interpreter; every argument is passed on unchanged.
python=""
prev=""
for arg in "$@"; do
    if [[ "$prev" == "--python" ]]; then python="$arg"; fi
    if [[ "$arg" == --python=* ]]; then python="${arg#--python=}"; fi
    prev="$arg"
done

if [[ -n "$python" ]]; then
    if ! command -v "$python" >/dev/null 2>&1; then
        say "error: --python $python: no such executable"
        exit 2
    fi
    if ! new_enough "$python"; then
        found="$("$python" --version 2>&1 || echo "not a working Python")"
        say "error: --python $python is $found; 3.9 or newer is needed"
        how_to_get_python
        exit 1
    fi
else
    for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11 python3.10 python3.9; do
        [[ -n "$candidate" ]] || continue
        if command -v "$candidate" >/dev/null 2>&1 && new_enough "$candidate"; then
            python="$(command -v "$candidate")"
            break
        fi
    done
    if [[ -z "$python" ]]; then
        if [[ -n "${PYTHON:-}" ]]; then
            say "error: PYTHON=$PYTHON is not a Python 3.9 or newer"
        elif command -v python3 >/dev/null 2>&1; then
            say "error: python3 is $(python3 --version 2>&1); 3.9 or newer is needed"
        else
            say "error: there is no python3 on this node"
        fi
        how_to_get_python
        exit 1
    fi
fi

if [[ ! -f "$here/src/slabvol/install/__init__.py" ]]; then
    say "error: $here/src/slabvol/install/__init__.py is missing;" \
        "run install.sh from a complete slabvol checkout"
    exit 1
fi

# -I: ignore PYTHONPATH and the user's site-packages, so the checkout's slabvol is the one
# that runs; -B: write no __pycache__ into the checkout.
exec "$python" -I -B -c '
import sys
sys.path.insert(0, sys.argv.pop(1))
from slabvol.install import run
sys.exit(run())
' "$here/src" --source "$here" "$@"
