"""One reader for Kafka's primitive types over a frame, shared by every hand-written walker.

The Produce skimmer (:mod:`proxy.kafka.produce_skim`) and the KIP-951 endpoint walker
(:mod:`proxy.kafka.node_endpoints`) read a message in place, copying nothing. A
:class:`Cursor` is a position in a buffer plus whether the message is flexible (compact
lengths as unsigned varint + 1, tagged fields), and raises :class:`WireError` on bytes that
do not parse.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


class WireError(ValueError):
    """The bytes end early or hold a malformed primitive (varint, string)."""


class Cursor:
    __slots__ = ("buf", "flexible", "pos")

    def __init__(self, buf: bytes | memoryview, pos: int = 0, flexible: bool = True) -> None:
        self.buf = buf
        self.pos = pos
        self.flexible = flexible

    def need(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise WireError(f"truncated at byte {self.pos} (need {n})")

    def skip(self, n: int) -> None:
        self.need(n)
        self.pos += n

    def int16(self) -> int:
        self.need(2)
        v: int = _I16.unpack_from(self.buf, self.pos)[0]
        self.pos += 2
        return v

    def int32(self) -> int:
        self.need(4)
        v: int = _I32.unpack_from(self.buf, self.pos)[0]
        self.pos += 4
        return v

    def int64(self) -> int:
        self.need(8)
        v: int = _I64.unpack_from(self.buf, self.pos)[0]
        self.pos += 8
        return v

    def uvarint(self) -> int:
        result = shift = 0
        buf, pos = self.buf, self.pos
        while True:
            if pos >= len(buf):
                raise WireError(f"truncated varint at byte {pos}")
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                self.pos = pos
                return result
            shift += 7
            if shift > 28:
                raise WireError(f"varint too long at byte {pos}")

    def length(self) -> int:
        """A string/bytes/array length: int16/int32 legacy or uvarint+1 compact; -1 is null."""
        return self.uvarint() - 1 if self.flexible else self.int32()

    def string(self) -> str | None:
        n = self.uvarint() - 1 if self.flexible else self.int16()
        if n < 0:
            return None
        self.need(n)
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            raise WireError(f"invalid UTF-8 string at byte {self.pos - n}") from exc

    def skip_bytes(self) -> None:
        """Skip a (nullable) bytes or string field."""
        n = self.length()
        if n > 0:
            self.skip(n)

    def skip_tags(self) -> None:
        if not self.flexible:
            return
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self.skip(self.uvarint())

    def skip_known_tags(self, known: Mapping[int, Callable[[Cursor], None]]) -> None:
        """Skip tagged fields, walking the known ones, each of which must fill exactly its
        declared size.

        Kafka's and kio's readers parse a known tag's struct and go on from its end, whatever
        size was declared; a walker that skips by size would read another message than they
        do (the KIP-951 walker once missed node endpoints that way, a ``tests/fuzz``
        finding), so a size that disagrees is a :class:`WireError`.
        """
        for _ in range(self.uvarint()):
            tag = self.uvarint()
            size = self.uvarint()
            self.need(size)
            end = self.pos + size
            walk = known.get(tag)
            if walk is not None:
                inner = Cursor(self.buf[:end], self.pos, flexible=True)
                walk(inner)
                if inner.pos != end:
                    raise WireError(
                        f"tagged field {tag}: {size} bytes declared, {inner.pos - self.pos} read"
                    )
            self.pos = end
