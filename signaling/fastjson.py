"""The JSON codec python-socketio uses for every packet: orjson, with the standard
library behind it for what orjson refuses (integers beyond 64 bits, which a client may
send and a relay must pass on), so nothing a client sends becomes an error here."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import socketio


class FastJson:
    """A `json`-like module for `socketio.AsyncServer(json=...)`."""

    JSONDecodeError = json.JSONDecodeError

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        # python-socketio passes `separators`; orjson is always compact.
        try:
            return orjson.dumps(obj).decode()
        except TypeError:
            return json.dumps(obj, separators=(",", ":"))

    @staticmethod
    def dumpb(obj: Any) -> bytes:
        """`dumps`, encoded as UTF-8."""
        try:
            return orjson.dumps(obj)
        except TypeError:
            return json.dumps(obj, separators=(",", ":")).encode()

    @staticmethod
    def loads(data: str | bytes, **_: Any) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return json.loads(data)


def event_utf8(name: str, payload: Any) -> bytes:
    """`Packet(EVENT, namespace="/", data=[name, payload]).encode()` as UTF-8, without
    building the Packet (a relayed message's event; tests/test_transport.py holds them
    equal): orjson's bytes go into the WebSocket frame as they are."""
    return b"2" + FastJson.dumpb([name, payload])


def ack_text(id: int, data: list[Any]) -> str:
    """`Packet(ACK, namespace="/", id=id, data=data).encode()`, likewise."""
    return "3" + str(id) + FastJson.dumps(data)


# An event or ack in the default namespace, with or without an id: what clients send.
_PLAIN = re.compile(r"([23])(\d{0,99})\[")


def plain_event(text: object) -> tuple[int | None, list[Any]] | None:
    """A Socket.IO event in the default namespace (`2<id>[...]`): its ack id and its
    data; None for any other packet."""
    if type(text) is not str or (plain := _PLAIN.match(text)) is None or plain[1] != "2":
        return None
    data: list[Any] = FastJson.loads(text[plain.end() - 1:])
    return (int(plain[2]) if plain[2] else None), data


class TextPacket(socketio.packet.Packet):  # type: ignore[misc]
    """The node's Socket.IO packets: JSON through FastJson, and never binary.

    python-socketio walks every outgoing payload looking for bytes to send as binary
    attachments. Nothing the node sends holds bytes (every relayed field is validated
    text or numbers), so the walk is skipped. Set as the server's `serializer`, which
    also keeps the codec off python-socketio's shared Packet class.
    """

    json = FastJson

    @classmethod
    def data_is_binary(cls, data: Any) -> bool:
        return False

    def decode(self, encoded_packet: str | bytes) -> int:
        # python-socketio's decode copies the packet once per field it strips; the usual
        # packet is read with one match and one copy, anything else goes to it.
        plain = _PLAIN.match(encoded_packet) if type(encoded_packet) is str else None
        if plain is None:
            count: int = super().decode(encoded_packet)
            return count
        self.packet_type = int(plain[1])
        self.namespace = None
        if plain[2]:
            self.id = int(plain[2])
        self.data = self.json.loads(encoded_packet[plain.end() - 1:])
        return 0
