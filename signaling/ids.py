"""Typed identifiers, so a room name is never passed where a participant id belongs."""

from typing import NewType

RoomId = NewType("RoomId", str)
ParticipantId = NewType("ParticipantId", str)
UserId = NewType("UserId", str)
# Opaque handle of one client connection; the edge fills it with its transport id
# (the Socket.IO sid) and services never look inside.
ConnectionId = NewType("ConnectionId", str)
# A client's session: outlives a lost transport for the resume grace period.
SessionId = NewType("SessionId", str)
CallId = NewType("CallId", str)
