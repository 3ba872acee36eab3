"""The streams workers on the Pipeline runner: the same process supervision (spawn, restart a
worker that dies, stop cleanly, wait until the group is stable), with the streams worker
(streams/worker.py) as each process's body. The topology goes to the workers cloudpickled, so
its steps may be lambdas and closures (docs/dependencies.md)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shmlog.pipeline import SPAWN, Pipeline
from shmlog.streams import worker

if TYPE_CHECKING:
    from shmlog.streams.app import App


def _dump(app: App) -> bytes:
    try:
        import cloudpickle
    except ImportError:
        raise ImportError("shmlog.streams needs cloudpickle to send the topology to its workers: "
                          "pip install 'shmlog[streams]'") from None
    return cloudpickle.dumps(app)


class StreamsRunner(Pipeline):
    def __init__(self, app: App, workers: int, batch_size: int, max_restarts: int) -> None:
        super().__init__(app.client_conf, app.source_topics(), None, group_id=app.application_id, workers=workers,
                         batch_size=batch_size, max_restarts=max_restarts,
                         processing_guarantee=app.processing_guarantee)
        self.app = app
        self.payload = _dump(app)
        self.step_metrics: dict[int, dict[str, list[int]]] = {}

    def _spawn(self, index):
        proc = SPAWN.Process(target=worker.main, name=f"{self.group_id}-worker-{index}",
                             args=(index, self.payload, self.batch_size, self.stop_event, self.reports))
        proc.start()
        self.procs[index] = proc

    def _on_report(self, kind, index, pid, data):
        if kind == "metrics":
            self.step_metrics[pid] = data

    def metrics(self) -> dict[str, dict[str, int]]:
        """Per step, summed over every worker process that reported: records in, records out,
        late records dropped (windows)."""
        self._drain()
        total: dict[str, dict[str, Any]] = {}
        for per_step in self.step_metrics.values():
            for name, (rin, rout, late) in per_step.items():
                t = total.setdefault(name, {"records_in": 0, "records_out": 0, "late_dropped": 0})
                t["records_in"] += rin
                t["records_out"] += rout
                t["late_dropped"] += late
        return total
