"""The one guard around the supervisor's coordinator services (shmlog/broker/service_guard.py):
both the group service and the transaction service answer a coordinator bug the same way."""
import logging

import pytest

from shmlog.broker import group_service, service_guard, txn_service
from shmlog.errors import KafkaError


class Bug(Exception):
    pass


def test_a_coordinator_bug_in_a_request_is_answered_fail_naming_the_coordinator_and_logged(caplog):
    guard = service_guard.ServiceGuard("the coordinator", (Bug,))

    def handler(sock, request):
        raise Bug("no transition from Empty on commit")
    with caplog.at_level(logging.WARNING, logger="shmlog.broker"):
        reply = guard.request(handler, None, {"op": "x"})
    assert reply == {"ok": False, "code": KafkaError._FAIL,
                     "error": "the coordinator error: no transition from Empty on commit"}
    assert "Traceback" in caplog.text and "no transition from Empty on commit" in caplog.text


def test_a_request_that_goes_well_is_answered_as_the_handler_says():
    guard = service_guard.ServiceGuard("the coordinator", (Bug,))
    assert guard.request(lambda sock, request: service_guard.DEFERRED, None, {}) is service_guard.DEFERRED


def test_a_coordinator_bug_in_a_timer_is_logged_and_an_expected_error_logged_in_one_line(caplog):
    guard = service_guard.ServiceGuard("the coordinator", (Bug,), (OSError,))

    def bug():
        raise Bug("bad state")

    def expected():
        raise OSError("disk gone")
    with caplog.at_level(logging.WARNING, logger="shmlog.broker"):
        assert guard.event(bug) is None
        assert guard.event(expected) is None
    assert "bad state" in caplog.text and "the coordinator: disk gone" in caplog.text


def test_anything_else_is_not_swallowed_by_the_guard():
    guard = service_guard.ServiceGuard("the coordinator", (Bug,))
    with pytest.raises(KeyError):
        guard.request(lambda sock, request: {}["op"], None, {})


def test_both_services_defer_with_the_one_marker_the_supervisor_checks():
    # The supervisor compares a reply with group_service.DEFERRED; the transaction service's must be it.
    assert group_service.DEFERRED is txn_service.DEFERRED is service_guard.DEFERRED
