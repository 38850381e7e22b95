#!/usr/bin/env bash
# Runs on the node that has device-mapper (the VM, or a real host): load modules, run
# the tier with the venv's pytest, in one boot:
#   1. every test not marked `alone`, spread over one pytest-xdist worker per CPU;
#   2. the tests marked `alone` (they detach loop devices, which concurrent LVM commands
#      would keep open), one at a time with nothing else running.
# Extra arguments go to both pytest runs. Exits non-zero when either run fails.
set -uo pipefail
for module in dm-mod loop overlay; do modprobe "$module" 2>/dev/null || true; done
export LVM_SUPPRESS_FD_WARNINGS=1
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
common=(-p no:cacheprovider --timeout "${SLABVOL_TEST_TIMEOUT:-900}" -o junit_family=xunit2 -v)
python -m pytest "${common[@]}" tests/lvm -m "not alone" \
    --junitxml="$SLABVOL_OUT/lvm-junit.xml" \
    -n "${SLABVOL_TEST_WORKERS:-$(nproc)}" --dist loadgroup "$@"
parallel=$?
python -m pytest "${common[@]}" tests/lvm -m alone -n 0 \
    --junitxml="$SLABVOL_OUT/lvm-alone-junit.xml" "$@"
alone=$?
# 5 = no tests collected (e.g. a -k that selects only one group): not a failure
for rc in "$parallel" "$alone"; do
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then
        echo "in-node: the real-LVM tier failed (parallel run: exit $parallel, alone run: exit $alone)"
        exit 1
    fi
done
if [ "$parallel" -eq 5 ] && [ "$alone" -eq 5 ]; then
    echo "in-node: no test selected"; exit 5
fi
exit 0
