"""A SQL source with the JDBC source connector's config (io.confluent.connect.jdbc.JdbcSourceConnector).

    connection.url, connection.user, connection.password   (sql_common)
    mode                      incrementing | timestamp | timestamp+incrementing
    incrementing.column.name  a strictly increasing column (an id)
    timestamp.column.name     a column set to the time each row was last written
    table.whitelist           tables to copy (one topic each: topic.prefix + table), split across tasks
    query                     instead of tables: one query (topic: topic.prefix), one task
    topic.prefix, poll.interval.ms (5000), batch.max.rows (100)

Each row is a record with a struct value (the columns; datetime columns as Connect's
Timestamp) and no key. The offset per table ({"table": name}, or {"query": "query"}) is the
JDBC source's: {"incrementing": id} and/or {"timestamp": ms, "timestamp_nanos": ns of the
second}; a restarted task reads rows after it. In timestamp mode, as with the JDBC source, a
row written later with a timestamp at or below one already read is not read again; with
timestamp+incrementing, rows sharing a timestamp are told apart by the id.
"""
from __future__ import annotations

import datetime
from typing import Any

from shmlog.connect import sql_common
from shmlog.connect.api import ConfigException, SourceConnector, SourceTask
from shmlog.connect.config import REQUIRED, Key
from shmlog.connect.data import EPOCH, SourceRecord, infer_schema, timestamp_ms

MODES = ("incrementing", "timestamp", "timestamp+incrementing")


class SqlSourceTask(SourceTask):
    def start(self, props):
        import sqlalchemy
        self.props = props
        self.engine = sql_common.engine_of(props)
        self.mode = props["mode"]
        self.inc = props.get("incrementing.column.name") or None
        self.ts = props.get("timestamp.column.name") or None
        self.batch = int(props["batch.max.rows"])
        self.poll_interval_s = int(props["poll.interval.ms"]) / 1000
        self.sources = []     # (source partition, topic, from-clause sql, columns or None)
        q = self.engine.dialect.identifier_preparer
        if props.get("query"):
            self.sources.append(({"query": "query"}, props["topic.prefix"], f"({props['query']}) AS q", None))
        else:
            meta = sqlalchemy.MetaData()
            for name in props["tables"]:
                try:
                    table = sqlalchemy.Table(name, meta, autoload_with=self.engine)
                except sqlalchemy.exc.NoSuchTableError:
                    raise ConfigException(f"table.whitelist names table {name!r}, which does not exist") from None
                for col in (self.inc, self.ts):
                    if col is not None and col not in table.c:
                        raise ConfigException(f"table {name!r} has no column {col!r}")
                self.sources.append(({"table": name}, props["topic.prefix"] + name, q.quote(name), table))
        self.quote = q.quote
        self.offsets = {}
        for part, *_ in self.sources:
            self.offsets[part["table" if "table" in part else "query"]] = \
                self.context.offset_storage_reader.offset(part) or {}
        self.buffered: list = []

    def _query(self, part, topic, from_sql, table):
        import sqlalchemy
        where, order, params, binds = [], [], {}, []
        key = part.get("table", "query")
        off = self.offsets[key]
        ts_type = table.c[self.ts].type if (table is not None and self.ts) else sqlalchemy.DateTime()
        if self.ts:
            last_ts = _ts_from_offset(off)
            c = self.quote(self.ts)
            if last_ts is not None:
                params["last_ts"] = last_ts if getattr(ts_type, "timezone", False) else last_ts.replace(tzinfo=None)
                binds.append(sqlalchemy.bindparam("last_ts", type_=ts_type))
                if self.inc and "incrementing" in off:
                    where.append(f"(({c} = :last_ts AND {self.quote(self.inc)} > :last_inc) OR {c} > :last_ts)")
                    params["last_inc"] = off["incrementing"]
                else:
                    where.append(f"{c} > :last_ts")
            order.append(c)
        if self.inc:
            if not self.ts and "incrementing" in off:
                where.append(f"{self.quote(self.inc)} > :last_inc")
                params["last_inc"] = off["incrementing"]
            order.append(self.quote(self.inc))
        sql = f"SELECT * FROM {from_sql}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY " + ", ".join(order)
        if self.inc:     # a total order: rows past the limit come next time
            sql += f" LIMIT {self.batch}"
        stmt = sqlalchemy.text(sql).bindparams(*binds)
        if table is not None:
            stmt = stmt.columns(*[sqlalchemy.column(c.name, c.type) for c in table.columns])
        with self.engine.connect() as conn:
            result = conn.execute(stmt, params)
            columns = list(result.keys())
            rows = [dict(zip(columns, (sql_common.python_value(v) for v in row))) for row in result]
        schema = None
        if table is not None:
            schema = {"type": "struct", "name": part.get("table"), "optional": False,
                      "fields": [sql_common.schema_of_column(c) for c in table.columns]}
        out = []
        for row in rows:
            offset = dict(off)
            if self.inc:
                offset["incrementing"] = int(row[self.inc])
            if self.ts:
                offset.update(_ts_offset(_as_datetime(row[self.ts])))
            value_schema = schema or infer_schema(row)
            out.append((key, offset, SourceRecord(topic, None, None, None, value_schema, row, source_partition=part,
                                                  source_offset=offset)))
            off = offset
        return out

    def poll(self):
        if not self.buffered:
            for source in self.sources:
                self.buffered += self._query(*source)
            if not self.buffered:
                self.context.stopping.wait(self.poll_interval_s)
                return None
        batch, self.buffered = self.buffered[:self.batch], self.buffered[self.batch:]
        for key, offset, _r in batch:
            self.offsets[key] = offset
        return [r for _k, _o, r in batch]

    def stop(self):
        self.engine.dispose()


def _as_datetime(value: Any) -> datetime.datetime:
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value


def _ts_offset(value: datetime.datetime) -> dict:
    return {"timestamp": timestamp_ms(value), "timestamp_nanos": value.microsecond * 1000}


def _ts_from_offset(off: dict) -> datetime.datetime | None:
    if "timestamp" not in off:
        return None
    seconds = off["timestamp"] // 1000
    return EPOCH + datetime.timedelta(seconds=seconds, microseconds=off.get("timestamp_nanos", 0) // 1000)


class SqlSourceConnector(SourceConnector):
    task_class = SqlSourceTask
    config_def = {**sql_common.CONNECTION_KEYS, **{k.name: k for k in [
        Key("mode", default=REQUIRED, choices=MODES),
        Key("incrementing.column.name", default=""),
        Key("timestamp.column.name", default=""),
        Key("table.whitelist", "list", []),
        Key("query", default=""),
        Key("topic.prefix", default=""),
        Key("poll.interval.ms", "int", 5000, minimum=1),
        Key("batch.max.rows", "int", 100, minimum=1),
    ]}}

    def start(self, props):
        super().start(props)
        mode = props["mode"]
        if "incrementing" in mode and not props["incrementing.column.name"]:
            raise ConfigException(f"mode={mode} needs incrementing.column.name")
        if "timestamp" in mode and not props["timestamp.column.name"]:
            raise ConfigException(f"mode={mode} needs timestamp.column.name")
        if bool(props["table.whitelist"]) == bool(props["query"]):
            raise ConfigException("give either table.whitelist or query")
        if props["query"] and not props["topic.prefix"]:
            raise ConfigException("with query, topic.prefix is the topic and must be set")
        sql_common.engine_of(props).dispose()     # a bad URL or a missing driver fails here

    def task_configs(self, max_tasks):
        base = {k: v for k, v in self.props.items() if k in self.config_def}
        base["table.whitelist"] = ",".join(self.props["table.whitelist"])
        tables = self.props["table.whitelist"]
        if not tables:
            return [{**base, "tables": []}]
        n = min(max_tasks, len(tables))
        return [{**base, "tables": tables[i::n]} for i in range(n)]
