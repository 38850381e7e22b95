#!/usr/bin/env bash
# Runs on the node that has device-mapper (the VM, or a real host): load modules, run
# the tier with the venv's pytest. Exits with pytest's status.
set -uo pipefail
for module in dm-mod loop overlay; do modprobe "$module" 2>/dev/null || true; done
export LVM_SUPPRESS_FD_WARNINGS=1
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
python -m pytest -p no:cacheprovider tests/lvm --junitxml="$SLABVOL_OUT/lvm-junit.xml" \
    -o junit_family=xunit2 --timeout "${SLABVOL_TEST_TIMEOUT:-900}" \
    -n "${SLABVOL_TEST_WORKERS:-$(nproc)}" --dist loadgroup -v "$@"
