"""confluent/type/decimal.proto: `confluent.type.Decimal` (unscaled value as big-endian
two's-complement bytes, precision, scale), as confluent-kafka has it."""
from google.protobuf.internal import builder as _builder

from shmlog.schema_registry.confluent import _add_file

DESCRIPTOR = _add_file("""
name: "confluent/type/decimal.proto"
package: "confluent.type"
message_type {
  name: "Decimal"
  field { name: "value" number: 1 label: LABEL_OPTIONAL type: TYPE_BYTES }
  field { name: "precision" number: 2 label: LABEL_OPTIONAL type: TYPE_UINT32 }
  field { name: "scale" number: 3 label: LABEL_OPTIONAL type: TYPE_INT32 }
}
syntax: "proto3"
""")

_builder.BuildMessageAndEnumDescriptors(DESCRIPTOR, globals())
_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, __name__, globals())
