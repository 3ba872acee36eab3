"""`shmlog bench WORKLOAD`: the benchmark harness (workloads and checks in shmlog/cli/benchmark.py).

    shmlog bench produce|consume|e2e|latency|trades [--records N | --duration S] [--record-bytes B]
                 [--partitions P] [--producers N] [--consumers N] [--acks 0|1|all]
                 [--compression none|gzip|snappy|lz4|zstd] [--api record|batch] [--wait busy|blocking] [--spin-share S]
                 [--rate R] [--value-format struct|json] [--ring-bytes B] [--fanout] [--pin/--no-pin]
                 [--bootstrap shm:///DIR|HOST:PORT] [--json] [--no-progress]

A progress bar on stderr while it runs, then a table (or, with --json, one JSON document) on
stdout; exit status 1 when a check failed (lost, duplicated or reordered records). See
docs/cli.md#shmlog-bench.
"""
import sys

import click

from shmlog.cli import benchmark as bm
from shmlog.cli._common import Failure, bootstrap_option
from shmlog.errors import KafkaException, reason_of

PHASE_LABELS = {"preload": "preloading", "run": "running", "drain": "draining"}


class ProgressBar:
    """on_progress for benchmark.run: one click.progressbar per phase, on stderr."""

    def __init__(self, workload):
        self.workload = workload
        self.phase = None
        self.bar = None
        self.by_time = False

    def __call__(self, phase, records_done, records_total, seconds_done, seconds_total):
        if phase != self.phase:
            self.close()
            self.phase = phase
            self.by_time = records_total is None and seconds_total is not None
            length = int(seconds_total * 1000) if self.by_time else max(int(records_total or 0), 1)
            label = f"{self.workload}: {PHASE_LABELS.get(phase, phase)}"
            self.records = 0
            self.bar = click.progressbar(length=length, label=label, file=sys.stderr, show_pos=not self.by_time,
                                         show_eta=True, item_show_func=self._item, width=30)
            self.bar.__enter__()
        self.records = records_done
        target = int(seconds_done * 1000) if self.by_time else records_done
        target = min(target, self.bar.length)
        if target > self.bar.pos:
            self.bar.update(target - self.bar.pos)
        else:
            self.bar.render_progress()

    def _item(self, _):
        return f"{self.records:,} records" if self.by_time else None

    def close(self):
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _option_error(name, message):
    return click.BadParameter(message, param_hint=f"'{name}'")


@click.command("bench")
@click.argument("workload", metavar="WORKLOAD", type=click.Choice(bm.WORKLOADS))
@click.option("--records", "-n", type=click.IntRange(min=1), metavar="N",
              help="Records to send, over all producers (default: 1,000,000; latency 50,000; trades 500,000).")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="Send for S seconds instead of a number of records.")
@click.option("--record-bytes", "-s", type=click.IntRange(min=1), default=100, show_default=True, metavar="B",
              help=f"Value size in bytes (at least {bm.MIN_RECORD_BYTES}: every value starts with a header).")
@click.option("--partitions", "-p", type=click.IntRange(1, 4096), metavar="P",
              help="Partitions of the bench topic (default 1; trades 8).")
@click.option("--producers", type=click.IntRange(1, 256), metavar="N",
              help="Producer processes (default 1; trades 2).")
@click.option("--consumers", type=click.IntRange(0, 256), metavar="N",
              help="Consumer processes, each reading whole partitions (default 1; trades 2; produce 0).")
@click.option("--acks", type=click.Choice(["0", "1", "all", "-1"]), default="1", show_default=True,
              help="Producer acks: 0 accepted, 1 in the ring, all fsynced.")
@click.option("--compression", type=click.Choice(bm.COMPRESSIONS), default="none", show_default=True,
              help="Producer compression.type.")
@click.option("--api", type=click.Choice(bm.APIS), default="record", show_default=True,
              help="record: produce()/poll(); batch: produce_values()/consume_batch().")
@click.option("--wait", type=click.Choice(bm.WAITS), default="blocking", show_default=True,
              help="How consumers wait for records: blocking (futex) or busy (spin; a core each).")
@click.option("--spin-share", type=click.FloatRange(0, 1), metavar="S",
              help="Blocking wait: the consumers' shmlog.wait.spin.share (default: the client's, 0.25).")
@click.option("--rate", type=click.IntRange(min=1), metavar="R",
              help="Pace the producers at R records/s in total (latency default: 10,000).")
@click.option("--value-format", type=click.Choice(bm.VALUE_FORMATS), default="struct", show_default=True,
              help="trades: values as a fixed struct (padded to --record-bytes) or as JSON.")
@click.option("--ring-bytes", type=click.IntRange(min=65536), metavar="B",
              help="ring.bytes of the bench topic, a power of two (default: the whole run in the ring, "
                   "up to 256 MiB a partition). Smaller than the run: the persister is on the path.")
@click.option("--fanout", is_flag=True,
              help="Every consumer reads every partition (default: each reads its share of them).")
@click.option("--pin/--no-pin", default=None,
              help="Pin each producer and consumer to a CPU of its own (default: when they fit the usable CPUs).")
@bootstrap_option("Run against this running broker, or a Kafka cluster's host:port (through confluent-kafka; "
                  "default: an embedded broker in a temporary data dir).", kafka_too=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
def bench(workload, records, duration, record_bytes, partitions, producers, consumers, acks, compression, api,
          wait, spin_share, rate, value_format, ring_bytes, fanout, pin, bootstrap, as_json, no_progress):
    """Benchmark WORKLOAD: produce, consume, e2e, latency or trades.

    \b
    produce   producers only; timed until the last flush() returns
    consume   a log preloaded (untimed), then read by the consumers
    e2e       producers and consumers at once: first send to last receive
    latency   paced producers (--rate); one-way latency from the send time in each record
    trades    keyed trades (symbols as keys) over several partitions; per-key order checked

    Records are checked as they are read (dense offsets, per-producer or per-key order, counts);
    a failed check exits with status 1.
    """
    config = bm.BenchConfig(workload=workload, record_bytes=record_bytes, records=records, duration_s=duration,
                            partitions=partitions, producers=producers, consumers=consumers,
                            acks="all" if acks == "-1" else acks, compression=compression, api=api, wait=wait,
                            spin_share=spin_share,
                            rate_per_s=rate, value_format=value_format, bootstrap=bootstrap,
                            ring_bytes=ring_bytes, fanout=fanout, pin=pin).resolved()
    problems = bm.validate(config)
    if problems:
        name, message = problems[0]
        raise _option_error(name, message)
    progress = None if no_progress else ProgressBar(workload)
    try:
        result = bm.run(config, on_progress=progress)
    except bm.BenchError as exc:
        raise Failure(f"bench {workload}: {' '.join(reason_of(exc).split())}") from None
    except (KafkaException, BufferError) as exc:
        raise Failure(f"bench {workload}: {type(exc).__name__}: {exc}" if isinstance(exc, BufferError)
                      else f"bench {workload}: {reason_of(exc)}") from None
    except KeyboardInterrupt:
        raise click.Abort() from None
    finally:
        if progress is not None:
            progress.close()
    if result.interrupted:
        raise click.Abort()
    click.echo(bm.to_json(result) if as_json else bm.format_table(result))
    if not result.ok:
        raise Failure(f"bench {workload}: check failed: " + "; ".join(p.splitlines()[0] for p in result.problems))
