"""The listener's view of the rings (shmlog/broker/kafka_listener/logs_view.py): a ring whose
topic went away is closed only once no request holds the rings, whichever thread lets go last."""
import threading

import pytest

pytest.importorskip("kio", reason="the Kafka listener's codec (kio) needs Python 3.11+")

from shmlog.broker.kafka_listener.logs_view import LogsView  # noqa: E402
from tests.conftest import create_topic  # noqa: E402


@pytest.fixture
def view(broker, admin, data_dir):
    create_topic(admin, "t", 1)
    v = LogsView(data_dir)
    yield v
    v.close()


def recreate(admin, view):
    admin.delete_topics(["t"])["t"].result(10)
    create_topic(admin, "t", 1)
    view.refresh()


def test_a_ring_whose_topic_went_away_is_closed_at_once_when_nothing_holds_the_rings(view, admin):
    view.hold()
    old = view.ring("t", 0)
    view.release()
    recreate(admin, view)
    assert old.closed
    view.hold()
    assert view.ring("t", 0) is not old and not view.ring("t", 0).closed
    view.release()


def test_a_ring_whose_topic_went_away_stays_open_until_the_last_holder_releases(view, admin):
    view.hold()
    view.hold()
    old = view.ring("t", 0)
    recreate(admin, view)
    assert not old.closed
    view.release()
    assert not old.closed
    view.release()
    assert old.closed


def test_rings_held_by_one_thread_stay_open_while_another_thread_retires_them(view, admin):
    view.hold()
    old = view.ring("t", 0)
    refreshed = threading.Thread(target=recreate, args=(admin, view))
    refreshed.start()
    refreshed.join(30)
    assert not old.closed
    released = threading.Thread(target=view.release)
    released.start()
    released.join(10)
    assert old.closed
