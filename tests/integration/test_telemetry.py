"""push_telemetry: a client's own metrics, shown by the broker until it detaches or pushes again."""
import time

import pytest

from shmlog import control
from shmlog.errors import KafkaError, KafkaException


def test_pushed_metrics_are_listed_with_their_client_and_replaced_by_the_next_push(broker):
    client = control.Control(broker.data_dir, register_as="producer")
    observer = control.Control(broker.data_dir)
    try:
        client.request("push_telemetry", metrics=[["jobs_done_total", {"job": "a"}, 3]])
        client.request("push_telemetry", metrics=[["jobs_done_total", {"job": "a"}, 5]])
        pushed = [c["telemetry"] for c in observer.request("status")["clients"] if c["kind"] == "producer"]
        assert pushed == [[["jobs_done_total", {"job": "a"}, 5]]]
    finally:
        client.close()
    deadline = time.monotonic() + 30        # the supervisor sees the closed connection on its next turn
    while any(c["kind"] == "producer" for c in observer.request("status")["clients"]):
        assert time.monotonic() < deadline, "a detached client's metrics are still listed"
    observer.close()


@pytest.mark.parametrize("metric", [["Bad-Name", {}, 1], ["ok", {"Bad Label": "x"}, 1], ["ok", {}, "seven"],
                                    ["ok", {}, True]])
def test_a_malformed_metric_is_refused_naming_it(broker, metric):
    client = control.Control(broker.data_dir, register_as="producer")
    try:
        with pytest.raises(KafkaException) as caught:
            client.request("push_telemetry", metrics=[metric])
        assert caught.value.args[0].code() in (KafkaError.INVALID_REQUEST, KafkaError._INVALID_ARG)
        assert repr(metric[0]) in str(caught.value)
        assert client.request("status")["pid"]     # the connection and the broker are still fine
    finally:
        client.close()
