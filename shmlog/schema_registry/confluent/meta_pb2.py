"""confluent/meta.proto: `confluent.Meta` and the `confluent.*_meta` options (see the package)."""
from google.protobuf import descriptor_pb2  # noqa: F401 - the options it extends must be in the pool
from google.protobuf.internal import builder as _builder

from shmlog.schema_registry.confluent import _add_file

DESCRIPTOR = _add_file("""
name: "confluent/meta.proto"
package: "confluent"
dependency: "google/protobuf/descriptor.proto"
message_type {
  name: "Meta"
  field { name: "doc" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "params" number: 2 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".confluent.Meta.ParamsEntry" }
  field { name: "tags" number: 3 label: LABEL_REPEATED type: TYPE_STRING }
  field { name: "rules" number: 4 label: LABEL_REPEATED type: TYPE_MESSAGE type_name: ".confluent.Rule" }
  nested_type {
    name: "ParamsEntry"
    field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
    field { name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_STRING }
    options { map_entry: true }
  }
}
message_type {
  name: "Rule"
  field { name: "name" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "doc" number: 2 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "expr" number: 3 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "sql" number: 4 label: LABEL_OPTIONAL type: TYPE_STRING }
}
extension { name: "file_meta" extendee: ".google.protobuf.FileOptions" number: 1088
            label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".confluent.Meta" }
extension { name: "message_meta" extendee: ".google.protobuf.MessageOptions" number: 1088
            label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".confluent.Meta" }
extension { name: "field_meta" extendee: ".google.protobuf.FieldOptions" number: 1088
            label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".confluent.Meta" }
extension { name: "enum_meta" extendee: ".google.protobuf.EnumOptions" number: 1088
            label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".confluent.Meta" }
extension { name: "enum_value_meta" extendee: ".google.protobuf.EnumValueOptions" number: 1088
            label: LABEL_OPTIONAL type: TYPE_MESSAGE type_name: ".confluent.Meta" }
options { go_package: "../confluent" }
syntax: "proto3"
""")

_builder.BuildMessageAndEnumDescriptors(DESCRIPTOR, globals())
_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, __name__, globals())
