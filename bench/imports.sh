#!/usr/bin/env bash
# bench/imports.py on the node: scripts/on-node bench/imports.sh [--rounds N]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python bench/imports.py "$@"
