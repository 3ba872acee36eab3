"""Replica placement, leader election and ISR rules (shmlog/broker/replicas.py, isr.py): pure."""
from shmlog.broker import isr, replicas
from shmlog.errors import KafkaError


def test_replicas_are_on_distinct_log_dirs_with_leaders_spread_from_the_least_loaded_dir():
    counts = [2, 0, 1]
    placed = replicas.assign(3, 2, 3, counts)
    assert placed == [[1, 2], [2, 0], [0, 1]]
    assert all(len(set(r)) == 2 for r in placed)
    assert counts == [3, 1, 2]


def test_a_replication_factor_above_the_log_dirs_names_both_numbers():
    code, message = replicas.factor_problem(4, 3)
    assert code == KafkaError.INVALID_REPLICATION_FACTOR
    assert "replication factor 4" in message and "(3)" in message


def test_an_assignment_listing_a_log_dir_twice_is_refused():
    code, message = replicas.assignment_problem([[1, 1]], 1, 3)
    assert code == KafkaError.INVALID_REPLICA_ASSIGNMENT and "twice" in message


def test_an_old_topic_entry_reads_as_one_replica_where_it_always_was():
    assert replicas.states({"id": 5, "partitions": 2}, 3) == [
        {"replicas": [2], "leader": 2, "leader_epoch": 0, "isr": [2]},
        {"replicas": [0], "leader": 0, "leader_epoch": 0, "isr": [0]}]


def test_a_failed_leader_is_replaced_by_an_in_sync_replica_at_the_next_epoch():
    state = {"replicas": [0, 1, 2], "leader": 0, "leader_epoch": 3, "isr": [0, 2]}
    assert replicas.elect(state, {0}) == {"replicas": [0, 1, 2], "leader": 2, "leader_epoch": 4, "isr": [2]}


def test_without_an_in_sync_replica_only_an_unclean_election_picks_a_leader():
    state = {"replicas": [0, 1], "leader": 0, "leader_epoch": 0, "isr": [0]}
    assert replicas.elect(state, {0}) is None
    assert replicas.elect(state, {0}, unclean=True)["leader"] == 1


def test_a_follower_that_stops_catching_up_leaves_the_isr_after_the_lag_window():
    state = {"replicas": [0, 1], "leader": 0, "leader_epoch": 0, "isr": [0, 1]}
    tracker = isr.LagTracker()
    for t in range(10):
        tracker.observe(t * 0.1, 100 + t, 0.5)
    assert isr.decide(state, {1: 105}, 105, tracker, 0.9, 0.5) is None      # caught up at t=0.5
    assert isr.decide(state, {1: 101}, 101, tracker, 0.9, 0.5) == [0]      # last caught up at t=0.1


def test_a_follower_rejoins_only_at_the_high_watermark():
    state = {"replicas": [0, 1], "leader": 0, "leader_epoch": 0, "isr": [0]}
    tracker = isr.LagTracker()
    tracker.observe(0.0, 50, 0.5)
    assert isr.decide(state, {1: 40}, 50, tracker, 0.1, 0.5) is None
    assert isr.decide(state, {1: 50}, 50, tracker, 0.1, 0.5) == [0, 1]


def test_a_follower_diverges_where_the_leaders_next_epoch_began():
    from shmlog.log import leader_epoch
    leader = [(0, 0), (2, 150)]
    assert leader_epoch.divergence([(0, 0)], leader, 300) == 150
    assert leader_epoch.divergence([(0, 0), (2, 150)], leader, 300) == 300
    assert leader_epoch.divergence([(0, 0), (1, 120)], leader, 300) == 120   # epoch 1 the leader never had
    assert leader_epoch.divergence([], leader, 300) is None
