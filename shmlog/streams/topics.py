"""Creating what a topology needs before its workers start: repartition and changelog topics
(internal), and output topics that do not exist yet; and refusing a join with a
co-partitioned table whose topic is not partitioned like the stream that joins it (Kafka
Streams' TopologyException for topics that are not co-partitioned)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from shmlog.errors import KafkaError, KafkaException
from shmlog.streams import steps as s

if TYPE_CHECKING:
    from shmlog.streams.app import App


def _steps(step):
    yield step
    for child in step.children:
        yield from _steps(child)


def ensure_topics(app: App, timeout_s: float) -> None:
    from shmlog import clients
    lib = clients.library(app.client_conf)
    NewTopic = lib.NewTopic   # noqa: N806 - the class of the library serving this bootstrap.servers
    admin = lib.AdminClient({"bootstrap.servers": app.client_conf["bootstrap.servers"]})
    try:
        existing = {name: len(meta.partitions) for name, meta in admin.list_topics(timeout=timeout_s).topics.items()}
        wanted: dict[str, NewTopic] = {}
        partitions: dict[str, int] = dict(existing)
        for table in app.tables:
            if table.topic not in existing:
                raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART,
                                                f"global table topic {table.topic!r} does not exist"))
        for ktable in app.ktables:
            if ktable.topic not in existing:
                raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART,
                                                f"table topic {ktable.topic!r} does not exist: create it first"))
        # An internal topic that feeds a co-partitioned table join takes the table's partition
        # count (as Kafka Streams sizes a repartition topic before such a join).
        table_sized = {src.topic: existing[table.topic] for src in app.sources if src.internal
                       for table in app.ktables_of(src.topic)}
        # Sources in building order: a repartition source comes after the step that feeds it,
        # so its upstream partition count is known when it is reached.
        for src in app.sources:
            if src.topic not in partitions:
                raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART,
                                                f"input topic {src.topic!r} of application {app.application_id!r} "
                                                f"does not exist: create it first"))
            count = partitions[src.topic]
            for joined in app.ktables_of(src.topic):
                if existing[joined.topic] != count:
                    raise KafkaException(KafkaError(
                        KafkaError.INVALID_PARTITIONS,
                        f"stream topic {src.topic!r} has {count} partitions but table topic {joined.topic!r} "
                        f"has {existing[joined.topic]}: a co-partitioned table join needs both topics with the "
                        f"same partition count (and keys partitioned alike); "
                        + (f"{src.topic!r} is internal: delete it and it is created with the table's count"
                           if src.internal else "re-key the stream with group_by() or join a global table "
                                                "(app.table)")))
            for step in _steps(src):
                targets = []
                if isinstance(step, s.Repartition):
                    targets.append((step.topic, {}))
                elif isinstance(step, s.ToTopic):
                    targets.append((step.topic, {}))
                targets += [(app.changelog_topic(store), {"cleanup.policy": "compact"}) for store in step.stores()]
                for topic, config in targets:
                    if topic not in partitions:
                        partitions[topic] = table_sized.get(topic, count)
                        wanted[topic] = NewTopic(topic, partitions[topic], config=config)
                    elif topic in existing and step.stores() and topic != getattr(step, "topic", None) \
                            and existing[topic] != count:
                        raise KafkaException(KafkaError(
                            KafkaError.INVALID_PARTITIONS,
                            f"changelog topic {topic!r} has {existing[topic]} partitions but its input "
                            f"{src.topic!r} has {count}: state is partitioned like the input"))
        if wanted:
            for future in admin.create_topics(list(wanted.values())).values():
                try:
                    future.result()
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
    finally:
        if hasattr(admin, "close"):     # confluent-kafka's AdminClient has none
            admin.close()
