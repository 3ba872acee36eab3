"""`range`: Kafka's RangeAssignor."""


def range_assignor(members, partitions):
    """Kafka's RangeAssignor: per topic, consecutive ranges; the first members get one extra."""
    out = {mid: [] for mid, *_ in members}
    for topic in sorted(partitions):
        subs = sorted((m for m in members if topic in m[2]), key=lambda m: m[1])
        if not subs:
            continue
        per, extra = divmod(partitions[topic], len(subs))
        start = 0
        for i, (mid, *_) in enumerate(subs):
            count = per + (1 if i < extra else 0)
            out[mid] += [(topic, p) for p in range(start, start + count)]
            start += count
    return {mid: sorted(tps) for mid, tps in out.items()}
