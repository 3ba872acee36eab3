"""Confluent's own .proto files, as confluent_kafka.schema_registry.confluent has them, so
generated `_pb2` code and serializers that use them run under shmlog:

- `shmlog.schema_registry.confluent.meta_pb2`: confluent/meta.proto - `confluent.Meta`
  (doc, params, tags, rules) and the options `confluent.file_meta`, `message_meta`,
  `field_meta`, `enum_meta`, `enum_value_meta` that annotate fields with tags such as PII;
- `shmlog.schema_registry.confluent.type.decimal_pb2`: confluent/type/decimal.proto -
  `confluent.type.Decimal`.

The files are the same descriptors (byte for byte) as confluent-kafka's, registered in
protobuf's default pool under the same names; when confluent-kafka's modules were imported
first, theirs are used. As in confluent-kafka, ProtobufSerializer does not register these
files as references (skip.known.types): every registry knows them.
"""
from google.protobuf import descriptor_pb2, descriptor_pool, text_format


def _add_file(text):
    """The FileDescriptor of a FileDescriptorProto (text format) in the default pool, added
    unless a file of that name is there already."""
    fdp = text_format.Parse(text, descriptor_pb2.FileDescriptorProto())
    pool = descriptor_pool.Default()
    try:
        return pool.FindFileByName(fdp.name)
    except KeyError:
        return pool.AddSerializedFile(fdp.SerializeToString())
