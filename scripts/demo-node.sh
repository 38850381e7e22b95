#!/usr/bin/env bash
# The demo, on a node with device-mapper (run it through ./demo). Two pods in a row ask
# for the same slab; the second one's dockerd already has the image the first one loaded.
set -euo pipefail
for module in dm-mod loop overlay; do modprobe "$module" 2>/dev/null || true; done
export LVM_SUPPRESS_FD_WARNINGS=1 LC_ALL=C
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
vg=slabvol_demo
work=$(mktemp -d /tmp/slabvol-demo.XXXXXX)
export SLABVOL_CONFIG=$work/slabvol.conf
plugin="$repo/vol_plugin"
loop=""
dockerd_pid=""

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }
cleanup() {  # must never fail or stop half-way: every step is allowed to find nothing
    set +e +o pipefail
    if [ -n "$dockerd_pid" ]; then kill "$dockerd_pid"; wait "$dockerd_pid"; fi
    for mnt in $(grep -o " $work/[^ ]*" /proc/self/mounts | sort -r); do umount -l "$mnt"; done
    vgremove -y -f "$vg"
    [ -n "$loop" ] && losetup -d "$loop"
    rm -rf "$work"
} >/dev/null 2>&1
trap 'status=$?; cleanup; exit $status' EXIT

if vgs "$vg" >/dev/null 2>&1; then echo "VG $vg exists already; remove it first" >&2; exit 1; fi

say "A node: a sparse 2 GiB file on a loop device becomes the volume group"
run truncate -s 2G "$work/pv.img"
loop=$(losetup --find --show "$work/pv.img")
run pvcreate -q "$loop"
run vgcreate -q "$vg" "$loop"
cat > "$SLABVOL_CONFIG" <<CONF
[slabvol]
volume_group = $vg
kubelet_dir = $work/kubelet
log_file = $work/slabvol.log
lock_file = $work/slabvol.lock
CONF
run "$plugin" init
run "$plugin" status

# a root filesystem for `docker import` (there is no registry to pull from)
mkdir -p "$work/rootfs/bin"
cp "$(command -v busybox)" "$work/rootfs/bin/busybox"
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .

pod() {  # pod NAME: the kubelet's mount, a dockerd on the slab, unmount
    local name=$1 uid dir sock
    uid=$(cat /proc/sys/kernel/random/uuid)
    dir=$work/kubelet/pods/$uid/volumes/ax~vol_plugin/docker-graph-storage
    sock=$work/$name.sock
    say "Pod $name (namespace ci) starts: the kubelet calls mount"
    mkdir -p -m 0750 "$dir"
    run "$plugin" mount "$dir" "{\"size_mb\":\"512\",\"kubernetes.io/fsType\":\"ext4\",\"kubernetes.io/pod.namespace\":\"ci\",\"kubernetes.io/pod.uid\":\"$uid\",\"kubernetes.io/pod.name\":\"$name\"}"
    say "Pod $name's dind sidecar: dockerd --data-root on the slab"
    dockerd --data-root "$dir" --iptables=false --bridge=none --ip-masq=false -H "unix://$sock" \
        --exec-root "$work/$name.exec" --pidfile "$work/$name.pid" >"$work/$name.dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 180); do docker -H "unix://$sock" info >/dev/null 2>&1 && break; sleep 1; done
    run docker -H "unix://$sock" images
    if [ "$name" = a ]; then
        run docker -H "unix://$sock" import "$work/rootfs.tar" demo/busybox:1
        run docker -H "unix://$sock" images
    elif ! docker -H "unix://$sock" image inspect demo/busybox:1 >/dev/null 2>&1; then
        echo "demo FAILED: pod $name's dockerd does not have demo/busybox:1" >&2
        exit 1
    fi
    kill "$dockerd_pid"; wait "$dockerd_pid" 2>/dev/null || true; dockerd_pid=""
    run "$plugin" status
    say "Pod $name ends: the kubelet calls unmount"
    run "$plugin" unmount "$dir"
    rmdir "$dir"
}

pod a
run "$plugin" status
pod b
say "Pod b's dockerd listed demo/busybox:1 without importing it: the cache survived"
run "$plugin" status
say "The driver's decision log"
cat "$work/slabvol.log"
