"""A SQL sink with the JDBC sink connector's config (io.confluent.connect.jdbc.JdbcSinkConnector).

    connection.url, connection.user, connection.password   (sql_common)
    insert.mode        insert | upsert
    pk.mode            none | record_key | record_value
    pk.fields          the key columns (record_key with a primitive key: one name, default
                       __connect_key; with a struct key: its fields, default all of them)
    delete.enabled     a tombstone (null value) deletes the row of its key (pk.mode=record_key)
    auto.create        CREATE TABLE from the first record's schema (or, schemaless, its values)
    table.name.format  ${topic} by default
    batch.size         rows per statement batch (3000)

Each put() writes its records in one database transaction, in order (consecutive rows of the
same kind go as one executemany), and commits: what put() returned is durable, so the offsets
the runtime commits after it never pass an unwritten row. A record replayed after a task was
killed is written again: with upsert (or deletes) that changes nothing; with insert it is a
second row, or a key violation where the table has a primary key (with errors.tolerance=all
such a record goes to the dead-letter queue).
"""
from __future__ import annotations

from typing import Any

from shmlog.connect import sql_common
from shmlog.connect.api import ConfigException, DataException, SinkConnector, SinkTask
from shmlog.connect.config import Key
from shmlog.connect.data import require_struct


class SqlSinkTask(SinkTask):
    def start(self, props):
        import sqlalchemy
        self.props = props
        self.engine = sql_common.engine_of(props)
        self.metadata = sqlalchemy.MetaData()
        self.tables: dict[str, Any] = {}
        self.upsert = props["insert.mode"] == "upsert"
        self.pk_mode = props["pk.mode"]
        self.pk_fields = list(props["pk.fields"])
        self.delete = props["delete.enabled"]
        self.batch = int(props["batch.size"])

    # ------------------------------------------------------------------ rows

    def _key_columns(self, record) -> dict:
        if self.pk_mode == "none":
            return {}
        if self.pk_mode == "record_key":
            if record.key is None:
                raise DataException(f"pk.mode=record_key but the record at {record.topic}-{record.kafka_partition}"
                                    f"@{record.kafka_offset} has a null key")
            if isinstance(record.key, dict):
                fields = require_struct(record.key, record.key_schema, "record_key pk")
                names = self.pk_fields or list(fields)
                missing = [n for n in names if n not in fields]
                if missing:
                    raise DataException(f"the record key has no field {missing[0]!r} (pk.fields)")
                return {n: fields[n] for n in names}
            return {(self.pk_fields or ["__connect_key"])[0]: record.key}
        fields = require_struct(record.value, record.value_schema, "record_value pk")
        missing = [n for n in self.pk_fields if n not in fields]
        if missing:
            raise DataException(f"the record value has no field {missing[0]!r} (pk.fields)")
        return {n: fields[n] for n in self.pk_fields}

    def _row(self, record) -> dict:
        fields = require_struct(record.value, record.value_schema, "sql sink value")
        row = {k: sql_common.python_value(v) for k, v in fields.items()}
        row.update(self._key_columns(record))
        return row

    def _table(self, conn, name, record, row):
        import sqlalchemy
        table = self.tables.get(name)
        if table is not None:
            return table
        inspector = sqlalchemy.inspect(conn)
        if inspector.has_table(name):
            table = sqlalchemy.Table(name, self.metadata, autoload_with=conn)
        elif self.props["auto.create"]:
            if record.value is None:
                raise DataException(f"table {name!r} does not exist and a tombstone cannot create it")
            schema_fields = {f["field"]: f for f in (record.value_schema or {}).get("fields", ())}
            key_cols = self._key_columns(record)
            cols = []
            for col, sample in row.items():
                field = schema_fields.get(col) if col not in key_cols or self.pk_mode == "record_value" else None
                cols.append(sqlalchemy.Column(col, sql_common.column_type(field, sample), primary_key=col in key_cols,
                                              nullable=col not in key_cols and (field is None or
                                                                                field.get("optional", True))))
            table = sqlalchemy.Table(name, self.metadata, *cols)
            table.create(conn, checkfirst=True)
        else:
            raise DataException(f"table {name!r} does not exist (set auto.create=true to create it)")
        unknown = [c for c in row if c not in table.c]
        if unknown:
            raise DataException(f"table {name!r} has no column {unknown[0]!r} (auto.evolve is not supported)")
        self.tables[name] = table
        return table

    # ------------------------------------------------------------------ statements

    def _write(self, conn, table, kind, rows):
        import sqlalchemy
        if kind == "delete":
            keys = list(rows[0])
            stmt = table.delete().where(sqlalchemy.and_(*[table.c[k] == sqlalchemy.bindparam("k_" + k) for k in keys]))
            conn.execute(stmt, [{"k_" + k: v for k, v in r.items()} for r in rows])
            return
        if kind == "insert":
            conn.execute(table.insert(), rows)
            return
        keys = [c.name for c in table.primary_key.columns] or self.pk_fields
        dialect = conn.dialect.name
        if dialect in ("sqlite", "postgresql"):
            mod = __import__(f"sqlalchemy.dialects.{dialect}", fromlist=["insert"])
            by_columns: dict[tuple, list] = {}
            for r in rows:
                by_columns.setdefault(tuple(r), []).append(r)
            for columns, group in by_columns.items():
                stmt = mod.insert(table)
                update = {c: stmt.excluded[c] for c in columns if c not in keys}
                stmt = stmt.on_conflict_do_update(index_elements=keys, set_=update) if update else \
                    stmt.on_conflict_do_nothing(index_elements=keys)
                conn.execute(stmt, group)
            return
        for r in rows:      # any other database: update, else insert
            cond = sqlalchemy.and_(*[table.c[k] == r[k] for k in keys])
            if conn.execute(table.update().where(cond).values(**r)).rowcount == 0:
                conn.execute(table.insert().values(**r))

    def put(self, records):
        pending: list = []     # (table, kind, rows) runs, in record order
        with self.engine.begin() as conn:
            for record in records:
                name = self.props["table.name.format"].replace("${topic}", record.topic)
                if record.value is None:
                    if not self.delete:
                        continue        # a tombstone means nothing without delete.enabled
                    key = self._key_columns(record)
                    table = self._table(conn, name, record, key)
                    kind, row = "delete", key
                else:
                    row = self._row(record)
                    table = self._table(conn, name, record, row)
                    kind = "upsert" if self.upsert else "insert"
                if pending and pending[-1][0] is table and pending[-1][1] == kind and len(pending[-1][2]) < self.batch:
                    pending[-1][2].append(row)
                else:
                    pending.append((table, kind, [row]))
            for table, kind, rows in pending:
                self._write(conn, table, kind, rows)

    def stop(self):
        self.engine.dispose()


class SqlSinkConnector(SinkConnector):
    task_class = SqlSinkTask
    config_def = {**sql_common.CONNECTION_KEYS, **{k.name: k for k in [
        Key("insert.mode", default="insert", choices=("insert", "upsert")),
        Key("pk.mode", default="none", choices=("none", "record_key", "record_value")),
        Key("pk.fields", "list", []),
        Key("delete.enabled", "boolean", False),
        Key("auto.create", "boolean", False),
        Key("table.name.format", default="${topic}"),
        Key("batch.size", "int", 3000, minimum=1),
    ]}}

    def start(self, props):
        super().start(props)
        if props["insert.mode"] == "upsert" and props["pk.mode"] == "none":
            raise ConfigException("insert.mode=upsert needs a pk.mode (record_key or record_value)")
        if props["delete.enabled"] and props["pk.mode"] != "record_key":
            raise ConfigException("Primary key mode must be 'record_key' when delete support is enabled")
        if props["pk.mode"] == "record_value" and not props["pk.fields"]:
            raise ConfigException("pk.mode=record_value needs pk.fields")
        sql_common.engine_of(props).dispose()

    def task_configs(self, max_tasks):
        base = {k: v for k, v in self.props.items() if k in self.config_def}
        return [dict(base) for _ in range(max_tasks)]
