"""The one guard around the supervisor's coordinator services (group_service.py, txn_service.py).

A coordinator (coordinator.py, txn_coordinator.py) is a pure state machine that raises its
InvalidTransition when asked for a state change its table does not allow: a bug in the broker,
never the fault of the request. Such a bug must not take the broker down, nor hide: the guard
logs it with its traceback and answers the request with _FAIL naming the coordinator, or, for a
timer or an event no request waits on, logs it and goes on. Errors the service expects of its
surroundings (`expected`, e.g. producer ids that cannot be reserved) are logged in one line.
"""
import logging
import traceback

from shmlog.broker import logs
from shmlog.errors import KafkaError


class _Deferred:
    def __repr__(self):
        return "DEFERRED"


DEFERRED = _Deferred()   # an op's return value meaning "the reply is sent later"


def wire(body):
    """A coordinator's reply body ({"error": code, "message": ...} or fields) as the control channel sends it."""
    if "error" in body:
        return {"ok": False, "code": body["error"], "error": body["message"]}
    return {"ok": True, **body}


class ServiceGuard:
    """what: the coordinator's name in messages; bugs: its InvalidTransition (and the like);
    expected: exceptions of its surroundings that a timer logs without a traceback."""

    def __init__(self, what, bugs, expected=()):
        self.what = what
        self.bugs = tuple(bugs)
        self.expected = tuple(expected)

    def _log_bug(self, exc):
        logs.get().log(logging.WARNING, f"{self.what}: {exc}\n{traceback.format_exc()}")

    def request(self, handler, sock, request):
        """handler(sock, request)'s wire reply (or DEFERRED); a coordinator bug is answered _FAIL."""
        try:
            return handler(sock, request)
        except self.bugs as exc:
            self._log_bug(exc)
            return wire({"error": int(KafkaError._FAIL), "message": f"{self.what} error: {exc}"})

    def event(self, fn, *args):
        """A timer or an event no request waits for (a tick, a closed connection): a bug is logged."""
        try:
            return fn(*args)
        except self.bugs as exc:
            self._log_bug(exc)
        except self.expected as exc:
            logs.get().log(logging.WARNING, f"{self.what}: {exc}")
        return None
