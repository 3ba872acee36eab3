"""`roundrobin`: Kafka's RoundRobinAssignor."""


def roundrobin_assignor(members, partitions):
    """Kafka's RoundRobinAssignor: all partitions in (topic, partition) order dealt to the
    members in order, skipping members not subscribed to the partition's topic."""
    ordered = sorted(members, key=lambda m: m[1])
    out = {mid: [] for mid, *_ in members}
    i = 0
    for topic in sorted(partitions):
        for p in range(partitions[topic]):
            for k in range(len(ordered)):
                mid, _, topics, _ = ordered[(i + k) % len(ordered)]
                if topic in topics:
                    out[mid].append((topic, p))
                    i = (i + k + 1) % len(ordered)
                    break
    return {mid: sorted(tps) for mid, tps in out.items()}
