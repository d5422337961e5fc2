"""What a session description says about the media it sends, for participants whose
token does not grant `publish` (they may receive, and send data channels, only)."""

from __future__ import annotations

from dataclasses import dataclass

_DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})
_SENDING = frozenset({"sendrecv", "sendonly"})


@dataclass(slots=True)
class _Section:
    kind: str
    rejected: bool  # port 0
    bundle_only: bool = False
    direction: str | None = None


def sends_media(sdp: str) -> bool:
    """Whether any live audio or video section of `sdp` sends (`sendrecv`/`sendonly`).

    A section without a direction takes the session's, whose default is `sendrecv`
    (RFC 8866 6.7). A section with port 0 is rejected unless it is `bundle-only` (it
    then rides on the bundle's transport, RFC 9143).
    """
    session_direction = "sendrecv"
    sections: list[_Section] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            fields = line[2:].split()
            sections.append(_Section(kind=fields[0] if fields else "",
                                     rejected=len(fields) < 2 or fields[1] == "0"))
        elif line.startswith("a=") and line[2:] in _DIRECTIONS:
            if sections:
                sections[-1].direction = line[2:]
            else:
                session_direction = line[2:]
        elif line == "a=bundle-only" and sections:
            sections[-1].bundle_only = True
    return any(s.kind in ("audio", "video") and (not s.rejected or s.bundle_only)
               and (s.direction or session_direction) in _SENDING for s in sections)
