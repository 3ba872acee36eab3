"""`cooperative-sticky`: a balanced, sticky assignment handed out in cooperative rounds (KIP-429)."""


def sticky_assignor(members, partitions):
    """Balanced and sticky: members keep what they own where they still may, unowned
    partitions go to the least loaded eligible member, then single partitions move from
    the most to the least loaded member until no eligible pair differs by more than one."""
    ordered = sorted(members, key=lambda m: m[1])
    topics_of = {mid: topics for mid, _, topics, _ in ordered}
    valid = {(t, p) for t, n in partitions.items() for p in range(n)}
    owner = {}
    for mid, _, topics, owned in ordered:
        for tp in sorted(owned):
            if tp in valid and tp[0] in topics and tp not in owner:
                owner[tp] = mid
    held = {mid: sorted(tp for tp, o in owner.items() if o == mid) for mid, *_ in ordered}
    rank = {mid: i for i, (mid, *_) in enumerate(ordered)}
    for tp in sorted(valid - set(owner)):
        eligible = [mid for mid in held if tp[0] in topics_of[mid]]
        if eligible:
            mid = min(eligible, key=lambda x: (len(held[x]), rank[x]))
            held[mid].append(tp)
    while True:
        moved = False
        for a in sorted(held, key=lambda x: (-len(held[x]), rank[x])):
            for b in sorted(held, key=lambda x: (len(held[x]), rank[x])):
                if len(held[a]) <= len(held[b]) + 1:
                    break
                movable = [tp for tp in held[a] if tp[0] in topics_of[b]]
                if movable:
                    tp = max(movable)
                    held[a].remove(tp)
                    held[b].append(tp)
                    moved = True
                    break
            if moved:
                break
        if not moved:
            return {mid: sorted(tps) for mid, tps in held.items()}


def withhold_owned_elsewhere(targets, owned):
    """Cooperative rebalancing (KIP-429): a partition moving from one member to another is
    first only revoked (its owner's target lacks it), and assigned in the next round, after
    the owner rejoins without it. So no partition is ever owned by two members at once."""
    owners = {}
    for mid, tps in owned.items():
        for tp in tps:
            owners.setdefault(tp, set()).add(mid)
    out = {}
    for mid, tps in targets.items():
        out[mid] = [tp for tp in tps if tp in owned[mid] or not owners.get(tp, set()) - {mid}]
    return out
