#!/usr/bin/env bash
# install.sh against real LVM: run as root on a node with device-mapper (the VM of
# ../shared/VM-RECIPE.md, or a scratch machine). It installs with the defaults (plugin
# dir, /opt/slabvol, /etc/slabvol), mounts a real slab through the installed driver,
# then uninstalls and purges. It refuses to start where slabvol is already installed.
#
#   tests/install/real-node.sh [WHEELHOUSE]
#
# WHEELHOUSE (optional): a dir from `pip wheel -w DIR <checkout>`, for a node without
# network (the VM). In the VM, from the checkout on the host:
#
#   pip wheel -w /tmp/slabvol-wh .
#   .venv-node/bin/vng -r "$(ls /boot/vmlinuz-*-amd64 | grep -v cloud | sort -V | tail -1)" --user root \
#       --disable-kvm --memory 2G --cpus 2 \
#       --exec "bash $PWD/tests/install/real-node.sh /tmp/slabvol-wh"
#
# Exit status 0 and "ALL OK" at the end: every step behaved.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
for module in dm-mod loop; do modprobe "$module" 2>/dev/null || true; done
export LVM_SUPPRESS_FD_WARNINGS=1 PATH=/usr/local/sbin:/usr/sbin:/sbin:$PATH
export PYTHON=${PYTHON:-/usr/bin/python3}
img=/var/tmp/slabvol-real-node.img
extra=()
if [ -n "${1:-}" ]; then extra=(--wheelhouse "$1"); fi
exe=/usr/libexec/kubernetes/kubelet-plugins/volume/exec/ax~vol_plugin/vol_plugin
dir=/var/lib/kubelet/pods/5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9/volumes/ax~vol_plugin/docker
opts='{"size_mb":"256","kubernetes.io/fsType":"ext4","kubernetes.io/pod.namespace":"ci","kubernetes.io/pod.uid":"5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9","kubernetes.io/readwrite":"rw"}'
step() { printf '\n===== %s\n' "$*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root"
dmsetup version >/dev/null 2>&1 || fail "no device-mapper here; run it in the VM"
if vgs slabvol >/dev/null 2>&1 || [ -e /etc/slabvol ] || [ -e /opt/slabvol ] || [ -e "$exe" ]; then
    fail "slabvol is installed on this machine already; this script would remove it"
fi

step "1. a loop file larger than the free space is refused; nothing is created"
free_kb=$(df --output=avail -k /var/tmp | tail -1)
too_big="$(( free_kb / 1024 / 1024 + 2 ))G"
if "$repo/install.sh" --loopback "$img" --size "$too_big" "${extra[@]}"; then fail "accepted"; fi
[ ! -e "$img" ] && ! vgs slabvol >/dev/null 2>&1 && [ ! -e /opt/slabvol ] || fail "it changed something"

step "2. install with --loopback"
"$repo/install.sh" --loopback "$img" --size 2G --force "${extra[@]}"
vgs slabvol; losetup --associated "$img"; head -1 "$exe"
"$exe" init | grep -q '"status": "Success"'
vol_plugin status

step "3. a second run changes nothing"
"$repo/install.sh" --loopback "$img" "${extra[@]}" | tee /tmp/real-node-second.txt
grep -q "Nothing changed" /tmp/real-node-second.txt

step "4. the installed driver mounts and unmounts a real slab"
mkdir -p "$dir"
"$exe" mount "$dir" "$opts"
findmnt "$dir"
echo warm > "$dir/marker"
vol_plugin status

step "5. uninstall is refused while the slab is mounted"
if "$repo/install.sh" --uninstall; then fail "uninstalled under a mounted slab"; fi
[ -x "$exe" ] || fail "the driver was removed"
"$exe" unmount "$dir"

step "6. after a 'reboot' (VG inactive, loop detached), install.sh re-attaches the file"
vgchange -an slabvol
losetup --associated "$img" | cut -d: -f1 | xargs -r -n1 losetup --detach
"$repo/install.sh" --loopback "$img" "${extra[@]}"
"$exe" mount "$dir" "$opts"
[ "$(cat "$dir/marker")" = warm ] || fail "the cache did not survive"
"$exe" unmount "$dir"

step "7. the boot unit's commands re-attach it as well (run by hand: no systemd needed)"
vgchange -an slabvol
losetup --associated "$img" | cut -d: -f1 | xargs -r -n1 losetup --detach
sed -n 's/^ExecStart=-\{0,1\}//p' /etc/systemd/system/slabvol-loopback.service |
    while read -r line; do eval "$line"; done
vgs slabvol

step "8. uninstall (run by the installed package itself) keeps the VG and the slab"
venv_python=$(ls -d /opt/slabvol/venvs/*/bin/python)
"$venv_python" -m slabvol.install --uninstall
[ ! -e "$exe" ] && [ ! -e /opt/slabvol ] || fail "driver or runtime left"
lvs --noheadings -o lv_name slabvol | grep -q slab_ || fail "the slab is gone"

step "9. purge keeps a VG that holds a foreign LV, then removes everything"
"$repo/install.sh" --loopback "$img" "${extra[@]}" >/dev/null
lvcreate --activate n --zero n --wipesignatures n -L 8m -n not_a_slab slabvol
if "$repo/install.sh" --uninstall --purge; then fail "purged a VG with a foreign LV"; fi
lvs slabvol/not_a_slab >/dev/null && [ -e /etc/slabvol/slabvol.conf ] || fail "removed too much"
lvs --noheadings -o lv_name slabvol | grep -q slab_ && fail "the slab was kept"
lvremove -y slabvol/not_a_slab
"$repo/install.sh" --uninstall --purge
! vgs slabvol >/dev/null 2>&1 && [ ! -e "$img" ] && [ ! -e /etc/slabvol ] || fail "purge left something"
[ -d /var/tmp ] || fail "purge removed /var/tmp"

step "ALL OK"
