"""Partition assignors: pure functions the group coordinator runs when a join phase ends.

One module per `partition.assignment.strategy`, as kafka-python keeps them in
kafka/coordinator/assignors/. They run in the coordinator (shmlog/broker/coordinator.py),
not in a leader member as classic Kafka does: the coordinator has the topic metadata at
hand, and a rebalance needs one round trip fewer.

Each assignor takes the members as [(member_id, sort_key, subscribed topics, owned
{(topic, partition)})] and the partitions as {topic: count}, and returns {member_id:
sorted [(topic, partition)]}. A cooperative strategy's targets then pass through
`withhold_owned_elsewhere` (KIP-429), so a partition moves in two rounds.

The strategy names users give are shmlog.config's EAGER_ASSIGNORS and COOPERATIVE_ASSIGNORS;
ASSIGNOR_FUNCTIONS binds each to its function (tests/unit/test_assignors.py checks the two agree).
"""
from shmlog.broker.assignors.cooperative_sticky import (
    sticky_assignor,
    withhold_owned_elsewhere,
)
from shmlog.broker.assignors.range import range_assignor
from shmlog.broker.assignors.roundrobin import roundrobin_assignor

ASSIGNOR_FUNCTIONS = {"range": range_assignor, "roundrobin": roundrobin_assignor,
                      "cooperative-sticky": sticky_assignor}

__all__ = ["ASSIGNOR_FUNCTIONS", "range_assignor", "roundrobin_assignor", "sticky_assignor",
           "withhold_owned_elsewhere"]
