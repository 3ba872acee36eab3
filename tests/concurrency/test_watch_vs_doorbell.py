"""watch vs doorbell: a consumer with nothing to read sets its bit in the ring's waiter mask,
looks at the ring again, and sleeps on its doorbell slot; a producer publishes, fences, reads
the waiter mask and wakes the slots in it (docs/architecture.md, "Blocking readers").

Either the consumer's second look sees the record, or the producer sees the bit and rings:
no wake-up is lost. The first two tests are the bare handshake as a duel of two processes
(harness.watch_duelist, publish_duelist), through the C consumer wait and through the
doorbell primitives. The others run it thousands of times as a ping-pong between two
consumers that are each other's producer, over two real rings and a real doorbell
(harness.pingpong_side): the sleeping side steers random delays so that the other side's
record lands on its way into the futex. Every sleep has a timeout (1-2 s) far above a
wake-up's latency; a sleep that ran out although its record had been published at least
half a timeout before (and, in the duels, its doorbell sequence never moved) is a lost
wake-up. There must be none.
"""
import pytest

from tests.concurrency import harness

pytestmark = pytest.mark.concurrency


def assert_no_wake_up_was_lost(sides):
    for who, outcomes in sides.items():
        assert outcomes["lost_wakeups"] == 0, f"{who} lost wake-ups:\n" + "\n".join(outcomes["examples"])
    sleeper = sides["sleeper"]
    # The race was run for real: the other side's record came both after the sleeper fell
    # asleep (it was woken) and before it did (it saw the record without sleeping).
    assert sleeper.get("woken", 0) > 0, sides
    assert sum(sleeper.get(k, 0) for k in harness.EARLY + ("seen_on_recheck",)) > 0, sides


def assert_the_sleeper_saw_the_record_or_was_rung(stats):
    assert stats["lost_wakeups"] == 0, f"lost wake-ups ({stats}):\n" + "\n".join(stats["examples"])
    assert stats.get("saw_it", 0) + stats.get("saw_it_and_was_rung", 0) > 0, stats  # both orders happened
    assert stats.get("was_rung", 0) + stats.get("saw_it_and_was_rung", 0) > 0, stats


def test_a_sleeper_in_wait_any_and_a_publisher_started_at_the_same_instant_end_with_the_record_seen_or_the_sleeper_rung(
        shm_name):
    """The bare handshake, thousands of times: one process goes to sleep in shmlog_wait_any
    (no spin: look, watch, look again, futex) while another publishes, the two steered to
    start together. Afterwards the sleeper must have seen the record without sleeping, or
    its doorbell sequence must have moved (the producer rang)."""
    stats = harness.duel_watches_against_publications([shm_name("ring"), shm_name("bell")], "wait_any")
    assert_the_sleeper_saw_the_record_or_was_rung(stats)


def test_watching_then_looking_again_then_sleeping_with_the_doorbell_primitives_ends_with_the_record_seen_or_rung(
        shm_name):
    """The same duel with the handshake spelled out one primitive per call, as a consumer
    outside the C core would: shmlog_doorbell_sequence, shmlog_ring_has_data,
    shmlog_doorbell_watch, has_data again, shmlog_doorbell_wait."""
    stats = harness.duel_watches_against_publications([shm_name("ring"), shm_name("bell")], "steps")
    assert_the_sleeper_saw_the_record_or_was_rung(stats)


def test_a_consumer_process_sleeping_in_wait_any_is_woken_for_every_record_published_as_it_falls_asleep(shm_name):
    sides = harness.pingpong("processes", [shm_name("a"), shm_name("b"), shm_name("bell")], "wait_any")
    assert_no_wake_up_was_lost(sides)


def test_a_consumer_thread_sleeping_in_wait_any_is_woken_for_every_record_published_as_it_falls_asleep(shm_name):
    sides = harness.pingpong("threads", [shm_name("a"), shm_name("b"), shm_name("bell")], "wait_any")
    assert_no_wake_up_was_lost(sides)
