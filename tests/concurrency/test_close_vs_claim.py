"""close vs claim: a stopping broker closes each ring before its final drain, and nothing may
be published in the ring after the closer has looked and seen no claim (docs/architecture.md,
"Memory-ordering argument"; csrc/core/close.c).

The producer stores its intent (CLAIMING, seq_cst), then loads `closed`, then moves the claim
pair; the closer stores `closed`, then loads every producer slot. Either the producer sees the
close and backs out (SHMLOG_ECLOSED, nothing claimed), or the closer sees the claim and waits
until it is published. Never "the closer saw no claim" and "a frame appeared afterwards": that
frame would miss the drain, and its producer would have been told it was delivered.

The first test is the bare handshake as a duel of two processes (harness.close_duelist,
claim_duelist). The others close a ring under producers appending as fast as they can.
"""
import pytest

from tests.concurrency import harness

pytestmark = pytest.mark.concurrency


def test_a_close_and_a_claim_started_at_the_same_instant_end_with_the_claim_refused_or_waited_for(shm_name):
    """Tens of thousands of rounds: one process closes the ring and looks at the claims while
    another appends one record, the two steered to start together. Once the closer saw no
    claim, the ring's end never moved."""
    stats = harness.duel_closes_against_claims([shm_name("ring")])
    assert stats["violations"] == 0, "records appended after the close settled:\n" + "\n".join(stats["examples"])
    # The race was run for real: the close came first sometimes, the append sometimes.
    assert stats.get("closer_won", 0) > 0, stats
    assert stats.get("append_won", 0) + stats.get("waited_for_claim", 0) > 0, stats


def assert_nothing_was_appended_after_the_close(got, producers):
    end = got["closer"]["end"]
    assert got["end_after"] == end, f"the ring's end moved from {end} to {got['end_after']} after the close"
    for i in range(producers):
        p = got[f"producer{i}"]
        assert p["refused"], f"producer{i} stopped without being refused: {p}"
        assert p["last"] < end, f"producer{i} appended offset {p['last']} at or past the end {end} at the close"
    assert sum(got[f"producer{i}"]["appended"] for i in range(producers)) == end


def test_producer_threads_appending_while_the_ring_is_closed_are_all_refused_and_append_nothing_after_it(shm_name):
    got = harness.race_close_against_producers("threads", shm_name("ring"), producers=3)
    assert_nothing_was_appended_after_the_close(got, 3)


def test_producer_processes_appending_while_the_ring_is_closed_are_all_refused_and_append_nothing_after_it(shm_name):
    got = harness.race_close_against_producers("processes", shm_name("ring"), producers=3)
    assert_nothing_was_appended_after_the_close(got, 3)
