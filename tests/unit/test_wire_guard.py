"""The bounds check before kio accepts every message kio writes, of every API and version.

A false refusal would close a client's connection over a valid message, so the check is run
over a filled-in message (every field set, arrays of one and two items, tagged fields) of
every request and response schema kio has, and must end exactly where the message ends.
"""

from __future__ import annotations

import pytest
from kio.index import load_request_schema, load_response_schema
from kio.schema.index import api_key_map, schema_name_map
from kio.static.constants import EntityType

from proxy.kafka.wire_guard import check
from tests.fuzz.seeds import request_frame, response_frame

CASES = [
    (kind, key, version)
    for key, name in sorted(api_key_map.items())
    for version, kinds in sorted(schema_name_map[name].items())
    for kind in (EntityType.request, EntityType.response)
    if kind in kinds
]


@pytest.mark.parametrize(("kind", "api_key", "version"), CASES)
def test_guard_accepts_what_kio_writes(kind: EntityType, api_key: int, version: int) -> None:
    is_request = kind is EntityType.request
    schema = (load_request_schema if is_request else load_response_schema)(api_key, version)
    for variant in (0, 1, 2):
        frame = (request_frame if is_request else response_frame)(api_key, version, variant)
        end = check(schema, frame, check(schema.__header_schema__, frame, 0))
        assert end == len(frame), (api_key, version, variant)
