"""`shmlog schemas`: the schema registry kept in the broker's `_schemas` topic.

    shmlog schemas list --data-dir D
    shmlog schemas get SUBJECT [--version N|latest] | --id ID
    shmlog schemas register SUBJECT (--schema TEXT | --schema-file F) [--type AVRO|PROTOBUF]
    shmlog schemas compatibility SUBJECT [--schema ... | --schema-file F] [--version N] [--set LEVEL]
    shmlog schemas serve [--host 127.0.0.1] [--port 8081] [--access-log] [--basic-auth-file F]
                         [--allow-remote-unauthenticated]

`serve` answers Confluent Schema Registry's REST API (shmlog.schema_registry.rest), so
confluent-kafka's own SchemaRegistryClient and serializers work against the registry.

A PROTOBUF schema is the base64 of a serialized FileDescriptorProto (what
ProtobufSerializer registers), or a descriptor-set file (`protoc --descriptor_set_out=F`,
its last file is registered). See docs/serialization.md.
"""
import base64
import json
import os
import signal
import sys

import click

from shmlog import control, security
from shmlog.cli._common import Failure, bootstrap, data_dir_option, table
from shmlog.errors import KafkaException
from shmlog.schema_registry import (
    COMPATIBILITY_LEVELS,
    Schema,
    SchemaRegistryClient,
    SchemaRegistryError,
)


class _Registry:
    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.client = None

    def __enter__(self):
        try:
            self.client = SchemaRegistryClient({"url": bootstrap(self.data_dir)})
        except SchemaRegistryError as exc:
            raise Failure(exc.error_message) from None
        return self.client

    def __exit__(self, exc_type, exc, tb):
        self.client.close()
        if isinstance(exc, SchemaRegistryError):
            raise Failure(exc.error_message) from None


def _schema_text(schema, schema_file, schema_type):
    if (schema is None) == (schema_file is None):
        raise click.UsageError("give the schema with exactly one of --schema TEXT or --schema-file FILE")
    if schema_file is not None:
        with open(schema_file, "rb") as f:
            raw = f.read()
        if schema_type == "PROTOBUF":
            return _protobuf_text(raw, schema_file)
        schema = raw.decode()
    return schema.strip()


def _protobuf_text(raw, path):
    """A descriptor-set file or base64 text -> base64 of one FileDescriptorProto."""
    text = raw.decode(errors="replace").strip()
    try:
        base64.b64decode(text, validate=True)
        return text
    except ValueError:
        pass
    from google.protobuf import descriptor_pb2
    fds = descriptor_pb2.FileDescriptorSet()
    try:
        fds.ParseFromString(raw)
    except Exception:
        fds = descriptor_pb2.FileDescriptorSet()
    if not fds.file:
        raise Failure(f"{path}: neither a FileDescriptorSet (protoc --descriptor_set_out) nor base64 of a "
                      f"FileDescriptorProto; .proto source text is not parsed here")
    return base64.standard_b64encode(fds.file[-1].SerializeToString()).decode("ascii")


def _type_option():
    return click.option("--type", "schema_type", type=click.Choice(["AVRO", "PROTOBUF", "JSON"], case_sensitive=False),
                        default="AVRO", show_default=True, help="Schema type.")


def _schema_options(f):
    f = click.option("--schema-file", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
                     help="Read the schema from FILE.")(f)
    f = click.option("--schema", metavar="TEXT", help="The schema text (Avro or JSON Schema JSON, or base64 for "
                                                     "PROTOBUF).")(f)
    return f


def _show(schema):
    if schema.schema_type in ("AVRO", "JSON"):
        try:
            return json.dumps(json.loads(schema.schema_str), indent=2)
        except ValueError:
            return schema.schema_str
    return schema.schema_str


@click.group()
def schemas():
    """List, show, register and check schemas (Avro, Protobuf, JSON Schema) of the schema registry, or serve
    it over HTTP."""


@schemas.command("list")
@data_dir_option()
def schemas_list(data_dir):
    """List subjects with their versions, latest schema id and type."""
    with _Registry(data_dir) as sr:
        rows = []
        for subject in sr.get_subjects():
            latest = sr.get_latest_version(subject)
            rows.append([subject, ",".join(map(str, sr.get_versions(subject))), latest.schema_id,
                         latest.schema.schema_type, sr.get_compatibility(subject)])
    if not rows:
        click.echo("no subjects")
        return
    click.echo(table(["SUBJECT", "VERSIONS", "LATEST-ID", "TYPE", "COMPATIBILITY"], rows, align_numbers=False))


@schemas.command("get")
@click.argument("subject", required=False)
@click.option("--version", default="latest", show_default=True, metavar="N", help="Version number or latest.")
@click.option("--id", "schema_id", type=int, metavar="ID", help="Show the schema with this id instead.")
@data_dir_option()
def schemas_get(subject, version, schema_id, data_dir):
    """Show a subject's schema version (or, with --id, a schema by id)."""
    if (subject is None) == (schema_id is None):
        raise click.UsageError("give a SUBJECT or --id ID")
    with _Registry(data_dir) as sr:
        if schema_id is not None:
            schema = sr.get_schema(schema_id)
            click.echo(f"id {schema_id}  type {schema.schema_type}")
        else:
            reg = sr.get_version(subject, version)
            schema = reg.schema
            click.echo(f"subject {subject}  version {reg.version}  id {reg.schema_id}  type {schema.schema_type}")
        for ref in schema.references:
            click.echo(f"reference {ref.name} -> {ref.subject} version {ref.version}")
        click.echo(_show(schema))


@schemas.command("register")
@click.argument("subject")
@_schema_options
@_type_option()
@data_dir_option()
def schemas_register(subject, schema, schema_file, schema_type, data_dir):
    """Register a schema under SUBJECT (refused with the reasons when incompatible)."""
    schema_type = schema_type.upper()
    text = _schema_text(schema, schema_file, schema_type)
    with _Registry(data_dir) as sr:
        reg = sr.register_schema_full_response(subject, Schema(text, schema_type))
    click.echo(f"registered {subject} version {reg.version} id {reg.schema_id}")


@schemas.command("compatibility")
@click.argument("subject")
@_schema_options
@_type_option()
@click.option("--version", default="latest", show_default=True, metavar="N",
              help="Check against this version (latest, a number, or all: every version the level checks).")
@click.option("--set", "level", type=click.Choice(COMPATIBILITY_LEVELS, case_sensitive=False),
              help="Set SUBJECT's compatibility level instead (use - as SUBJECT for the global default).")
@data_dir_option()
def schemas_compatibility(subject, schema, schema_file, schema_type, version, level, data_dir):
    """Check a schema against SUBJECT, set its level (--set), or show the level.

    Exit status 0 when compatible, 1 (with the reasons) when not.
    """
    target = None if subject == "-" else subject
    with _Registry(data_dir) as sr:
        if level is not None:
            if schema is not None or schema_file is not None:
                raise click.UsageError("--set does not take a schema")
            click.echo(f"compatibility of {subject if target else 'the global default'} set to "
                       f"{sr.set_compatibility(target, level.upper())}")
            return
        if schema is None and schema_file is None:
            click.echo(sr.get_compatibility(target))
            return
        text = _schema_text(schema, schema_file, schema_type.upper())
        problems = sr.check_compatibility(subject, Schema(text, schema_type.upper()),
                                          None if version == "all" else version)
        current = sr.get_compatibility(subject)
    if problems:
        raise Failure(f"incompatible ({current}): " + "; ".join(problems))
    click.echo(f"compatible ({current})")


def _broker_policy(data_dir):
    """The running broker's access policy (docs/security.md), as its supervisor computed it: its
    owner and effective settings come from the control channel (greeting and metadata)."""
    real = os.path.realpath(data_dir)
    try:
        ctl = control.Control(real)
    except KafkaException as exc:
        raise Failure(exc.args[0].str()) from None
    try:
        settings = ctl.request("metadata").get("broker") or {}
        owner = ctl.owner if ctl.owner is not None else os.stat(real).st_uid
    except KafkaException as exc:
        raise Failure(exc.args[0].str()) from None
    finally:
        ctl.close()
    return security.Policy(settings, owner=owner)


@schemas.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback; another needs --allow-remote-unauthenticated or "
                   "--basic-auth-file).")
@click.option("--port", type=click.IntRange(0, 65535), default=8081, show_default=True,
              help="Port to listen on (0: a free one, printed on start).")
@click.option("--access-log", is_flag=True, help="Print one line per request on stderr.")
@click.option("--allow-remote-unauthenticated", "allow_remote", is_flag=True,
              help="Allow a --host other than loopback: peers on other hosts cannot be identified and are "
                   "admitted without authentication (processes of this host are still checked).")
@click.option("--basic-auth-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Require HTTP basic authentication too: FILE has USER:SHA256 lines (the password's SHA-256 "
                   "in hex); clients set basic.auth.user.info=USER:PASSWORD.")
@data_dir_option()
def schemas_serve(host, port, access_log, allow_remote, basic_auth_file, data_dir):
    """Serve the registry over HTTP with Confluent Schema Registry's REST API.

    Prints `serving the schema registry of DIR at http://HOST:PORT` once it listens, then
    answers until interrupted (Ctrl-C or SIGTERM: exit status 0). Point confluent-kafka's
    SchemaRegistryClient({"url": "http://HOST:PORT"}) at it.

    Only the users the broker admits (its owner, shmlog.allowed.users, shmlog.allowed.groups,
    shmlog.shared.group; docs/security.md) are served: every connection's user is looked up
    in the kernel's TCP table, and any other user, or a peer that cannot be identified, gets
    403 (error code 40301). With --basic-auth-file every request also needs one of its users'
    passwords (401 without).
    """
    from shmlog.schema_registry.rest import (
        RegistryServer,
        RemoteBindRefused,
        is_loopback_bind,
        load_basic_auth,
        remote_bind_refusal,
    )

    basic_auth = None
    if basic_auth_file is not None:
        try:
            basic_auth = load_basic_auth(basic_auth_file)
        except OSError as exc:
            raise Failure(f"cannot read --basic-auth-file {basic_auth_file}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise Failure(f"--basic-auth-file: {exc}") from None
    if not is_loopback_bind(host) and not allow_remote and basic_auth is None:
        raise Failure(remote_bind_refusal(host))

    def log(line):
        click.echo(f"shmlog schemas serve: {line}", err=True)

    def access(line):
        click.echo(line, err=True)

    with _Registry(data_dir) as sr:
        policy = _broker_policy(data_dir)
        try:
            server = RegistryServer(sr, host, port, access_log=access if access_log else None, policy=policy,
                                    data_dir=os.path.realpath(data_dir), allow_remote=allow_remote, log=log,
                                    basic_auth=basic_auth)
        except RemoteBindRefused as exc:
            raise Failure(str(exc)) from None
        except OSError as exc:
            raise Failure(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None

        def stop(signum, frame):
            raise KeyboardInterrupt
        previous = signal.signal(signal.SIGTERM, stop)
        try:
            click.echo(f"serving the schema registry of {data_dir} at {server.url}")
            sys.stdout.flush()
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            server.server_close()
