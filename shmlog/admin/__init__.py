"""shmlog.admin: what confluent_kafka.admin exports, so `from confluent_kafka.admin import
AdminClient, NewTopic` becomes `from shmlog.admin import AdminClient, NewTopic`.

Every name confluent_kafka.admin has is here. What cannot exist on one host (ACLs, SCRAM
credentials, leader elections) has its value types, so code that builds them imports and
runs, and the AdminClient calls that would use them raise KafkaException(_UNSUPPORTED_FEATURE)
saying why. docs/compatibility.md lists every call and what shmlog does for it.
"""
import concurrent.futures  # noqa: F401  (confluent_kafka.admin exposes `concurrent`)
import enum
import warnings  # noqa: F401  (likewise `warnings`)
from typing import Any, Dict, List, Optional, Set, Tuple, Union  # noqa: F401, UP035  (and its typing names)

from shmlog.client.admin import (  # noqa: F401
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    BrokerMetadata,
    ClusterMetadata,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    ConsumerGroupDescription,
    ConsumerGroupListing,
    DeletedRecords,
    DescribeClusterResult,
    GroupMember,
    GroupMetadata,
    ListConsumerGroupsResult,
    ListOffsetsResultInfo,
    MemberAssignment,
    MemberDescription,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    PartitionLag,
    PartitionMetadata,
    ResourcePatternType,
    ResourceType,
    TopicDescription,
    TopicMetadata,
)
from shmlog.errors import KafkaError, KafkaException  # noqa: F401
from shmlog.message import OFFSET_INVALID  # noqa: F401
from shmlog.model import enum_member

string_type = str

# The module-level ints confluent_kafka.admin re-exports from its C module.
RESOURCE_UNKNOWN, RESOURCE_ANY, RESOURCE_TOPIC, RESOURCE_GROUP, RESOURCE_BROKER, RESOURCE_TRANSACTIONAL_ID = \
    (t.value for t in ResourceType)
CONFIG_SOURCE_UNKNOWN_CONFIG = ConfigSource.UNKNOWN_CONFIG.value
CONFIG_SOURCE_DYNAMIC_TOPIC_CONFIG = ConfigSource.DYNAMIC_TOPIC_CONFIG.value
CONFIG_SOURCE_DYNAMIC_BROKER_CONFIG = ConfigSource.DYNAMIC_BROKER_CONFIG.value
CONFIG_SOURCE_DYNAMIC_DEFAULT_BROKER_CONFIG = ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value
CONFIG_SOURCE_STATIC_BROKER_CONFIG = ConfigSource.STATIC_BROKER_CONFIG.value
CONFIG_SOURCE_DEFAULT_CONFIG = ConfigSource.DEFAULT_CONFIG.value
CONFIG_SOURCE_GROUP_CONFIG = ConfigSource.GROUP_CONFIG.value


# ---------------------------------------------------------------------------- ACLs
# Value types only: AdminClient.create_acls/describe_acls/delete_acls raise (no ACLs on one host).

class AclBinding:
    _FIELDS = ("restype", "name", "resource_pattern_type", "principal", "host", "operation", "permission_type")

    def __init__(self, restype: ResourceType | str | int, name: str | None,
                 resource_pattern_type: ResourcePatternType | str | int, principal: str | None, host: str | None,
                 operation: AclOperation | str | int, permission_type: AclPermissionType | str | int) -> None:
        self.restype = enum_member(restype, ResourceType, "restype")
        self.restype_int = self.restype.value
        self.name = name
        self.resource_pattern_type = enum_member(resource_pattern_type, ResourcePatternType, "resource_pattern_type")
        self.resource_pattern_type_int = self.resource_pattern_type.value
        self.principal = principal
        self.host = host
        self.operation = enum_member(operation, AclOperation, "operation")
        self.operation_int = self.operation.value
        self.permission_type = enum_member(permission_type, AclPermissionType, "permission_type")
        self.permission_type_int = self.permission_type.value

    def _values(self):
        return tuple(getattr(self, f) for f in self._FIELDS)

    def __repr__(self):
        return f"{type(self).__name__}({','.join(str(v) for v in self._values())})"

    def __hash__(self):
        return hash(self._values())

    def __eq__(self, other):
        if not isinstance(other, AclBinding):
            return NotImplemented
        return self._values() == other._values()

    def __lt__(self, other):
        if not isinstance(other, AclBinding):
            return NotImplemented
        return [str(v) for v in self._values()] < [str(v) for v in other._values()]


class AclBindingFilter(AclBinding):
    pass


# ---------------------------------------------------------------------------- SCRAM
# Value types only: the SCRAM calls raise (no SASL on one host).

class ScramMechanism(enum.Enum):
    UNKNOWN = 0
    SCRAM_SHA_256 = 1
    SCRAM_SHA_512 = 2

    def __lt__(self, other):
        if not isinstance(other, ScramMechanism):
            return NotImplemented
        return self.value < other.value


class ScramCredentialInfo:
    def __init__(self, mechanism: ScramMechanism, iterations: int) -> None:
        self.mechanism = mechanism
        self.iterations = iterations


class UserScramCredentialsDescription:
    def __init__(self, user: str, scram_credential_infos: list[ScramCredentialInfo]) -> None:
        self.user = user
        self.scram_credential_infos = scram_credential_infos


class UserScramCredentialAlteration:
    def __init__(self, user: str) -> None:
        self.user = user


class UserScramCredentialUpsertion(UserScramCredentialAlteration):
    def __init__(self, user: str, scram_credential_info: ScramCredentialInfo, password: bytes,
                 salt: bytes | None = None) -> None:
        super().__init__(user)
        self.scram_credential_info = scram_credential_info
        self.password = password
        self.salt = salt


class UserScramCredentialDeletion(UserScramCredentialAlteration):
    def __init__(self, user: str, mechanism: ScramMechanism) -> None:
        super().__init__(user)
        self.mechanism = mechanism
