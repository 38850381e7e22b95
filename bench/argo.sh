#!/usr/bin/env bash
# bench/argo.py on the node: scripts/on-node bench/argo.sh ARGO_VOL_PLUGIN
set -euo pipefail
for module in dm-mod loop overlay; do modprobe "$module" 2>/dev/null || true; done
export LVM_SUPPRESS_FD_WARNINGS=1
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python bench/argo.py "$@"
