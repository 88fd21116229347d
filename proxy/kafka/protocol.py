"""Kafka's API keys and error codes: one table for the whole proxy, derived from kio.

kio generates its schemas from Kafka's own JSON message definitions, so the numbers here are
Kafka's by construction; a name kio does not know fails at import, not on the wire.
"""

from __future__ import annotations

from functools import cache

from kio.schema.errors import ErrorCode
from kio.schema.index import api_key_map

_KEYS = {name: key for key, name in api_key_map.items()}

# -- API keys ---------------------------------------------------------------------------------
PRODUCE = _KEYS["produce"]
FETCH = _KEYS["fetch"]
LIST_OFFSETS = _KEYS["list_offsets"]
METADATA = _KEYS["metadata"]
FIND_COORDINATOR = _KEYS["find_coordinator"]
SASL_HANDSHAKE = _KEYS["sasl_handshake"]
API_VERSIONS = _KEYS["api_versions"]
SASL_AUTHENTICATE = _KEYS["sasl_authenticate"]
DESCRIBE_CLUSTER = _KEYS["describe_cluster"]
OFFSET_COMMIT = _KEYS["offset_commit"]
TXN_OFFSET_COMMIT = _KEYS["txn_offset_commit"]
OFFSET_FETCH = _KEYS["offset_fetch"]
END_TXN = _KEYS["end_txn"]
OFFSET_FOR_LEADER_EPOCH = _KEYS["offset_for_leader_epoch"]

#: The group APIs the proxy holds while it checks and restores committed offsets: whatever
#: reads or moves a group's offsets or membership. Describe/List requests, FindCoordinator
#: and AddOffsetsToTxn (answered by the transaction coordinator) flow.
GROUP_APIS = frozenset(
    _KEYS[name]
    for name in (
        "offset_commit",
        "offset_fetch",
        "join_group",
        "heartbeat",
        "leave_group",
        "sync_group",
        "txn_offset_commit",
        "delete_groups",
        "offset_delete",
        "consumer_group_heartbeat",
        "streams_group_heartbeat",
    )
)

# -- error codes --------------------------------------------------------------------------------
OFFSET_OUT_OF_RANGE = int(ErrorCode.offset_out_of_range)
CORRUPT_MESSAGE = int(ErrorCode.corrupt_message)
INVALID_RECORD = int(ErrorCode.invalid_record)
COORDINATOR_NOT_AVAILABLE = int(ErrorCode.coordinator_not_available)
UNSUPPORTED_VERSION = int(ErrorCode.unsupported_version)
DUPLICATE_SEQUENCE_NUMBER = int(ErrorCode.duplicate_sequence_number)
KAFKA_STORAGE_ERROR = int(ErrorCode.kafka_storage_error)
UNKNOWN_SERVER_ERROR = int(ErrorCode.unknown_server_error)


@cache
def api_name(api_key: int) -> str:
    """Kafka's name of an API (``produce``), ``unknown`` for a key kio does not know."""
    return api_key_map.get(api_key, "unknown")
