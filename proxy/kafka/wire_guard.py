"""A bounds check of a Kafka message against its kio schema, before kio decodes it.

kio's native reader trusts array lengths: a compact array announcing 2^32 elements makes it
reserve that many slots first, and the allocation failure aborts the whole process (Rust's
out-of-memory handler), so one hostile broker or client byte sequence would take down every
connection. It also hands back ``None`` for a null array or string the schema says cannot be
null, which the rewriters then trip over. Kafka's own generated parsers refuse both.

:func:`check` walks the bytes the way kio will read them (the same field order, compact or
legacy encodings, nullable structs, tagged fields), copying nothing, and raises
:class:`~proxy.kafka.cursor.WireError` on an array longer than the bytes left could hold,
a null where the schema allows none, or a length past the end; only then does kio decode.
The walk is found by fuzzing (``tests/fuzz``) to be needed; its cost is one pass of Python
over the few messages the proxy decodes at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import cache
from typing import Any

from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    PrimitiveField,
    PrimitiveTupleField,
    classify_field,
    get_schema_field_type,
    is_optional,
)

from proxy.kafka.cursor import Cursor, WireError

_FIXED = {
    "bool": 1,
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "uint16": 2,
    "error_code": 2,
    "int32": 4,
    "uint32": 4,
    "timedelta_i32": 4,
    "int64": 8,
    "uint64": 8,
    "float64": 8,
    "timedelta_i64": 8,
    "datetime_i64": 8,
    "uuid": 16,
}

Step = Callable[[Cursor], None]


def check(schema: type, buf: bytes | memoryview, offset: int = 0) -> int:
    """Walk one ``schema`` entity at ``offset``; return where it ends (raises WireError)."""
    cur = Cursor(buf, offset, flexible=bool(getattr(schema, "__flexible__", False)))
    _entity_step(schema, False)(cur)
    return cur.pos


def _length(cur: Cursor, flexible: bool, legacy_size: int) -> int:
    if flexible:
        return cur.uvarint() - 1
    return cur.int16() if legacy_size == 2 else cur.int32()


def _array_len(cur: Cursor, flexible: bool, nullable: bool, min_item: int, what: str) -> int:
    n = _length(cur, flexible, 4)
    if n < 0:
        if n != -1 or not nullable:
            raise WireError(f"{what}: null or negative array length {n} at byte {cur.pos}")
        return 0
    if n * max(min_item, 1) > len(cur.buf) - cur.pos:
        raise WireError(f"{what}: array of {n} items at byte {cur.pos} exceeds the message")
    return n


def _primitive_step(kafka_type: str, flexible: bool, nullable: bool, what: str) -> Step:
    size = _FIXED.get(kafka_type)
    if size is not None:
        return _skip(size)
    if kafka_type not in ("string", "bytes", "records"):
        raise WireError(f"{what}: unknown kafka type {kafka_type!r}")
    legacy = 2 if kafka_type == "string" else 4

    def step(cur: Cursor) -> None:
        n = _length(cur, flexible, legacy)
        if n < 0:
            if n != -1 or not nullable:
                raise WireError(f"{what}: null or negative length {n} at byte {cur.pos}")
            return
        cur.skip(n)

    return step


def _fixed_size(field: dataclasses.Field[Any]) -> int | None:
    """Bytes of a non-tagged scalar field of fixed size (ints, uuid, ...), else None."""
    if not isinstance(classify_field(field), PrimitiveField):
        return None
    return _FIXED.get(get_schema_field_type(field))


def _skip(n: int) -> Step:
    return lambda cur: cur.skip(n)


def _min_size(kafka_type: str, flexible: bool) -> int:
    return _FIXED.get(kafka_type, 1 if flexible else (2 if kafka_type == "string" else 4))


def _field_step(field: dataclasses.Field[Any], flexible: bool, tagged: bool, header: bool) -> Step:
    what = field.name
    # Null is let through wherever the type allows it; only a nullable struct outside the
    # tagged fields carries kio's presence marker byte (kio reads tagged structs without).
    nullable = is_optional(field)
    fc = classify_field(field)
    if isinstance(fc, PrimitiveField):
        if header and field.name == "client_id":  # always a legacy nullable string
            return _primitive_step("string", False, True, what)
        return _primitive_step(get_schema_field_type(field), flexible, nullable, what)
    if isinstance(fc, PrimitiveTupleField):
        kafka_type = get_schema_field_type(field)
        item = _primitive_step(kafka_type, flexible, False, what)
        min_item = _min_size(kafka_type, flexible)

        def primitives(cur: Cursor) -> None:
            for _ in range(_array_len(cur, flexible, nullable, min_item, what)):
                item(cur)

        return primitives
    if isinstance(fc, EntityField):
        return _entity_step(fc.type_, nullable and not tagged)
    if isinstance(fc, EntityTupleField):
        entity_type = fc.type_

        def entities(cur: Cursor) -> None:
            step = _entity_step(entity_type, False)
            for _ in range(_array_len(cur, flexible, nullable, 1, what)):
                step(cur)

        return entities
    raise WireError(f"{what}: unsupported field class {fc!r}")


@cache
def _entity_step(schema: type, nullable: bool) -> Step:
    flexible = bool(getattr(schema, "__flexible__", False))
    header = schema.__name__ == "RequestHeader"
    plan: list[Step | int] = []  # an int: that many bytes of fixed-size fields in a row
    tags: dict[int, Step] = {}
    for f in dataclasses.fields(schema):
        tag = f.metadata.get("tag")
        if tag is not None:
            tags[int(tag)] = _field_step(f, flexible, True, header)
            continue
        size = _fixed_size(f)
        if size is None:
            plan.append(_field_step(f, flexible, False, header))
        elif plan and isinstance(plan[-1], int):
            plan[-1] += size
        else:
            plan.append(size)
    steps = [_skip(p) if isinstance(p, int) else p for p in plan]

    def step(cur: Cursor) -> None:
        if nullable:
            cur.need(1)
            marker = cur.buf[cur.pos]
            cur.pos += 1
            if marker == 0xFF:  # int8 -1: null struct (KIP-893)
                return
        for s in steps:
            s(cur)
        if not flexible:
            return
        cur.skip_known_tags(tags)

    return step
