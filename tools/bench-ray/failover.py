"""Ray's failover, side by side with reelfleet's (BENCHMARKS.md, "Failover
next to Ray"): three Ray nodes on loopback, an actor with unlimited
restarts placed on one of them (soft node affinity, so it may restart
elsewhere; one CPU, since an actor of no CPU was not placed where asked),
that node SIGKILLed (every process of its raylet), and the
time until the actor answers again from another node. Ray's defaults.

Run inside a network namespace that has only loopback, so that Ray binds
there and nowhere else:

    ip netns add raybench && ip netns exec raybench ip link set lo up
    python3 -m venv /tmp/ray && /tmp/ray/bin/pip install ray==2.9.0
    ip netns exec raybench /tmp/ray/bin/python tools/bench-ray/failover.py 20
"""

import sys
import time

import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ray.remote(max_restarts=-1, max_task_retries=-1, num_cpus=1)
class Pinger:
    def ping(self):
        return ray.get_runtime_context().get_node_id()


def node_id_of(node):
    """The Ray node id of a `cluster_utils` node (found by its raylet's socket)."""
    for n in ray.nodes():
        if n["Alive"] and n["RayletSocketName"] == node.raylet_socket_name:
            return n["NodeID"]
    raise RuntimeError(f"no live node with raylet {node.raylet_socket_name}")


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    kills = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1"},
    )
    workers = [cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1") for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    times = []
    for k in range(kills):
        victim = workers[k % len(workers)]
        victim_id = node_id_of(victim)
        actor = Pinger.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(victim_id, soft=True)
        ).remote()
        where = ray.get(actor.ping.remote(), timeout=60)
        assert where == victim_id, f"the actor starts on the node to be killed: {where} != {victim_id}"
        start = time.monotonic()
        cluster.remove_node(victim, allow_graceful=False)  # SIGKILL
        while True:
            try:
                moved = ray.get(actor.ping.remote(), timeout=1)
                if moved != victim_id:
                    break
            except Exception:
                pass
            time.sleep(0.05)
        took = time.monotonic() - start
        times.append(took)
        print(f"kill {k + 1}: answered again after {took:.2f} s", flush=True)
        ray.kill(actor)
        workers[k % len(workers)] = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
    print(
        f"ray {ray.__version__}: {len(times)} kills, recovery p50 {percentile(times, 50):.2f} s, "
        f"p99 {percentile(times, 99):.2f} s, max {max(times):.2f} s"
    )
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
