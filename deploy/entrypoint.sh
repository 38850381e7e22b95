#!/bin/sh
# Entrypoint of the slabvol installer DaemonSet (deploy/daemonset.yaml).
#
# The driver must be built with the node's own Python and installed into the node's file
# system, so install.sh runs in the host's namespaces (nsenter into PID 1), not in this
# container. Steps: copy the source (and the wheelhouse built into the image) to a host dir
# that is mounted at the same path here, run install.sh there, then sleep so the pod stays
# Running. A failed install exits non-zero: the pod goes to CrashLoopBackOff and
# `kubectl logs` shows install.sh's message.
set -eu

stage="${SLABVOL_STAGE:-/run/slabvol-installer}"
args="${INSTALL_ARGS:-}"
node="${NODE_NAME:-$(hostname)}"

if [ ! -d "$stage" ]; then
    echo "slabvol installer: $stage is not mounted from the host; see deploy/daemonset.yaml" >&2
    exit 1
fi
rm -rf "$stage/src.new"
mkdir -p "$stage/src.new"
cp -a /slabvol/. "$stage/src.new/"
rm -rf "$stage/src"
mv "$stage/src.new" "$stage/src"

if [ "${SLABVOL_OFFLINE:-true}" = "true" ] && [ -d "$stage/src/wheelhouse" ]; then
    args="$args --wheelhouse $stage/src/wheelhouse"
fi

echo "slabvol installer on $node: install.sh $args"
# shellcheck disable=SC2086  # INSTALL_ARGS is a list of words
nsenter --target 1 --mount --uts --ipc --net --pid -- "$stage/src/install.sh" $args
echo "slabvol installer on $node: done; sleeping. Delete this pod to run install.sh again."
exec sleep 2147483647
