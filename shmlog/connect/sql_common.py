"""What the SQL source and sink share: the connection (SQLAlchemy) and column types.

`connection.url` is an SQLAlchemy URL (sqlite:///path.db, postgresql+psycopg://host/db,
postgresql+psycopg:///db?host=/socket/dir) or a JDBC URL of the two databases tested here
(jdbc:sqlite:/path.db, jdbc:postgresql://host:port/db), translated; `connection.user` and
`connection.password` are put into it.
"""
from __future__ import annotations

import datetime
import decimal
from typing import Any

from shmlog.connect.api import ConfigException
from shmlog.connect.config import REQUIRED, Key
from shmlog.connect.data import DATE, TIMESTAMP

CONNECTION_KEYS = {k.name: k for k in [Key("connection.url", default=REQUIRED), Key("connection.user", default=None),
                                       Key("connection.password", "password", None)]}


def engine_of(props: dict[str, Any]) -> Any:
    try:
        import sqlalchemy
    except ImportError:
        raise ConfigException("the SQL connectors need SQLAlchemy: pip install 'shmlog[connect]'") from None
    url = props["connection.url"]
    if url.startswith("jdbc:sqlite:"):
        url = "sqlite:///" + url[len("jdbc:sqlite:"):]
    elif url.startswith("jdbc:postgresql:"):
        url = "postgresql+psycopg:" + url[len("jdbc:postgresql:"):]
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError as exc:
        raise ConfigException(f"Invalid value {url!r} for configuration connection.url: {exc}") from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if props.get("connection.user"):
        parsed = parsed.set(username=props["connection.user"])
    if props.get("connection.password"):
        parsed = parsed.set(password=props["connection.password"])
    try:
        return sqlalchemy.create_engine(parsed)
    except (ImportError, sqlalchemy.exc.ArgumentError) as exc:
        raise ConfigException(f"Invalid value {url!r} for configuration connection.url: {exc}") from None


def schema_of_column(column: Any) -> dict:
    """A column's type (reflected by SQLAlchemy) -> a Connect schema."""
    import sqlalchemy.types as t
    ct = column.type
    if isinstance(ct, t.Boolean):
        kind: dict = {"type": "boolean"}
    elif isinstance(ct, t.Integer):
        kind = {"type": "int64"}
    elif isinstance(ct, (t.Float, t.Numeric)):
        kind = {"type": "float64"}
    elif isinstance(ct, t.DateTime):
        kind = {"type": "int64", "name": TIMESTAMP, "version": 1}
    elif isinstance(ct, t.Date):
        kind = {"type": "int32", "name": DATE, "version": 1}
    elif isinstance(ct, t.LargeBinary):
        kind = {"type": "bytes"}
    else:
        kind = {"type": "string"}
    return {"field": column.name, **kind, "optional": bool(column.nullable)}


def column_type(schema: dict | None, sample: Any) -> Any:
    """A Connect field (or, schemaless, a sample value) -> an SQLAlchemy type for CREATE TABLE."""
    import sqlalchemy.types as t
    kind = schema.get("type") if schema else None
    name = schema.get("name") if schema else None
    if name == TIMESTAMP or isinstance(sample, datetime.datetime):
        return t.DateTime(timezone=True)
    if name == DATE or isinstance(sample, datetime.date):
        return t.Date()
    if kind == "boolean" or isinstance(sample, bool):
        return t.Boolean()
    if kind in ("int8", "int16", "int32", "int64") or (kind is None and isinstance(sample, int)):
        return t.BigInteger()
    if kind in ("float32", "float64") or isinstance(sample, (float, decimal.Decimal)):
        return t.Float()
    if kind == "bytes" or isinstance(sample, (bytes, bytearray)):
        return t.LargeBinary()
    return t.Text()


def python_value(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def utc(value: Any) -> Any:
    if isinstance(value, datetime.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=datetime.timezone.utc)
    return value
