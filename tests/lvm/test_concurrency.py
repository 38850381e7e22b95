"""Several kubelets' calls at once: no slab is ever mounted for two pods."""

import os
import threading

from invariants import check_accounting

WORKERS = 4
CYCLES = 3


def test_parallel_mount_unmount_cycles_never_share_a_slab(node, kubelet, pod_factory):
    holders = {}
    guard = threading.Lock()
    errors = []

    def worker(index):
        try:
            for cycle in range(CYCLES):
                pod = pod_factory(namespace=f"ns-{index % 2}")
                call = kubelet.mount(pod, size_mb="64")
                assert call.status == "Success", call.output
                target = kubelet.volume_dir(pod)
                slab = node.slab_at(target)
                assert slab, f"{target} is not a slab mount"
                with guard:
                    assert slab not in holders, f"{slab} mounted for {holders.get(slab)} and {pod.uid}"
                    holders[slab] = pod.uid
                owner = os.path.join(target, "owner")
                with open(owner, "w") as handle:
                    handle.write(pod.uid)
                for _ in range(3):
                    with open(owner) as handle:
                        assert handle.read() == pod.uid
                with guard:
                    del holders[slab]
                call = kubelet.unmount(pod)
                assert call.status == "Success", call.output
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(f"worker {index}: {exc!r}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    check_accounting(node)
    states = [s["state"] for s in node.status()["slabs"]]
    assert states and set(states) == {"free"}
    # at most one slab per worker could ever be needed at once
    assert len(states) <= WORKERS
