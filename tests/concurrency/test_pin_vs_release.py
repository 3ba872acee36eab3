"""pin vs release: a zero-copy reader pins a ring position, a releaser (the persister, or a
producer short of space) advances the release position (docs/architecture.md, "Space release
vs zero-copy pins").

The reader stores its pin, then reads whether a release is under way and where the release
position is; the releaser announces itself, then reads the pins. Either the reader sees the
release and is refused (it copies instead), or the releaser sees the pin and stops before it.
Never both "the reader was granted its pin" and "the release went past it".

The first test is the bare handshake as a duel of two processes (harness.pin_duelist,
release_duelist). The others run it inside a working ring, thousands of times, on a real
64 KiB ring in shared memory (harness.pin_reader, pin_releaser, pin_producer): readers pin
the next frame nobody released yet and, while the pin is granted, check that the release
position stays at or below it and that the pinned frames keep their bytes and CRC32C while
the producers, blocked for space, press against the pin.
"""
import pytest

from tests.concurrency import harness

pytestmark = pytest.mark.concurrency


def assert_no_granted_pin_was_released(stats):
    assert stats["violations"] == 0, "granted pins were released:\n" + "\n".join(stats["examples"])
    assert stats["granted"] >= 2 * harness.PIN_ROUNDS * harness.SCALE
    # The race was run for real: producers were held back by granted pins, and releases moved.
    assert stats["pressed"] > 0, stats
    assert stats["release_advances"] > 0, stats


def test_a_pin_and_a_release_past_it_started_at_the_same_instant_never_both_succeed(shm_name):
    """The bare handshake, tens of thousands of times: one process pins a fresh position c
    just above the release position while another releases up to c + 64, the two steered to
    start together. Either the pin is refused or the release stops at c."""
    stats = harness.duel_pins_against_releases([shm_name("ring")])
    assert stats["violations"] == 0, "granted pins were released:\n" + "\n".join(stats["examples"])
    assert stats.get("pin_won", 0) > 0 and stats.get("release_won", 0) > 0, stats  # both sides won sometimes


def test_a_pin_granted_to_a_reader_thread_keeps_every_releaser_and_producer_off_its_frames(shm_name):
    stats = harness.race_pins_against_releases("threads", shm_name("ring"), readers=2, producers=2, releasers=1)
    assert_no_granted_pin_was_released(stats)


def test_a_pin_granted_to_a_reader_process_keeps_every_releaser_and_producer_off_its_frames(shm_name):
    stats = harness.race_pins_against_releases("processes", shm_name("ring"), readers=2, producers=2, releasers=1)
    assert_no_granted_pin_was_released(stats)


def test_two_releaser_processes_racing_each_other_never_release_past_a_granted_pin(shm_name):
    stats = harness.race_pins_against_releases("processes", shm_name("ring"), readers=2, producers=1, releasers=2)
    assert_no_granted_pin_was_released(stats)
