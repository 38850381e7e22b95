#!/bin/sh
# Entrypoint of the slabvol installer image (deploy/Dockerfile, deploy/base/daemonset.yaml).
#
#   slabvol-installer install   the DaemonSet's init container: install, then exit
#   slabvol-installer wait      the DaemonSet's main container: sleep until stopped
#   slabvol-installer           both in turn (a manifest that runs the image without
#                               arguments, as deploy/daemonset.yaml did before it had an
#                               init container)
#
# The driver must be built with the node's own Python and installed into the node's file
# system, so install.sh runs in the host's namespaces (nsenter into PID 1), not in this
# container. Steps: copy the source (and the wheelhouse built into the image) to a host dir
# that is mounted at the same path here, then run install.sh there. A failed install exits
# non-zero: the init container is restarted with back-off (Init:CrashLoopBackOff), the pod
# never becomes Ready, `kubectl rollout status` does not report success, and
# `kubectl logs -c install` shows install.sh's message.
set -eu

install() {
    stage="${SLABVOL_STAGE:-/run/slabvol-installer}"
    args="${INSTALL_ARGS:-}"
    node="${NODE_NAME:-$(hostname)}"

    if [ ! -d "$stage" ]; then
        echo "slabvol installer: $stage is not mounted from the host;" \
             "see deploy/base/daemonset.yaml" >&2
        exit 1
    fi
    rm -rf "$stage/src.new"
    mkdir -p "$stage/src.new"
    cp -a "${SLABVOL_IMAGE_SOURCE:-/slabvol}/." "$stage/src.new/"  # (tests: elsewhere)
    rm -rf "$stage/src"
    mv "$stage/src.new" "$stage/src"

    # deploy/components/nfd: publish warm caches as node labels (install.sh --nfd FILE).
    # Not with --uninstall, which removes the feature file named in slabvol.conf.
    if [ -n "${NFD_FEATURES_FILE:-}" ]; then
        case " $args " in
            *" --uninstall "*) ;;
            *) args="$args --nfd $NFD_FEATURES_FILE" ;;
        esac
    fi
    if [ "${SLABVOL_OFFLINE:-true}" = "true" ] && [ -d "$stage/src/wheelhouse" ]; then
        args="$args --wheelhouse $stage/src/wheelhouse"
    fi

    echo "slabvol installer on $node: install.sh $args"
    # shellcheck disable=SC2086  # INSTALL_ARGS is a list of words
    nsenter --target 1 --mount --uts --ipc --net --pid -- "$stage/src/install.sh" $args
    echo "slabvol installer on $node: done. Delete this pod to run install.sh again."
}

wait_until_stopped() {
    # sleep in the background and wait for it, so that SIGTERM ends the pod at once
    # ($! and not a variable set after it: the trap may run between `&` and the next line)
    trap 'kill $! 2>/dev/null; exit 0' TERM INT
    while :; do
        sleep 86400 &
        wait $! || true
    done
}

case "${1:-}" in
    install) install ;;
    wait) wait_until_stopped ;;
    "") install; wait_until_stopped ;;
    *) echo "usage: slabvol-installer [install|wait]" >&2; exit 2 ;;
esac
