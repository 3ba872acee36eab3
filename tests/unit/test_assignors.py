"""The assignor table and the strategy names users configure are one set.

shmlog.config names the strategies (EAGER_ASSIGNORS, COOPERATIVE_ASSIGNORS) for the client's
config check and the coordinator's join check; shmlog.broker.assignors binds each name to the
function that runs it. The algorithms themselves are tested in tests/unit/test_coordinator.py.
"""
from shmlog.broker import assignors
from shmlog.config import COOPERATIVE_ASSIGNORS, EAGER_ASSIGNORS, parse_consumer_config


def test_every_configurable_strategy_has_an_assignor_and_no_assignor_lacks_a_name():
    assert sorted(assignors.ASSIGNOR_FUNCTIONS) == sorted(EAGER_ASSIGNORS + COOPERATIVE_ASSIGNORS)
    assert not set(EAGER_ASSIGNORS) & set(COOPERATIVE_ASSIGNORS)


def test_the_default_strategies_are_ones_the_coordinator_runs():
    default = parse_consumer_config({"bootstrap.servers": "shm:///nowhere"}).partition_assignment_strategy
    assert default and all(name in assignors.ASSIGNOR_FUNCTIONS for name in default)
