"""File transfers: who offered what to whom, each party's progress, and the transfer's state.

Transport-free. The bytes go peer to peer (or through the HTTP relay); this
service only keeps the state every party and observer is shown. Progress never
goes backwards, and a final state is final.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from .errors import BadRequest, Conflict, Forbidden, NotFound
from .ids import ParticipantId, RoomId, UserId
from .protocol import FileOffer
from .rooms import Participant

RATE_WINDOW = 3.0  # seconds of progress samples behind `rate`


class TransferState(StrEnum):
    OFFERED = "offered"
    ACCEPTED = "accepted"
    TRANSFERRING = "transferring"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


FINAL = frozenset({TransferState.DONE, TransferState.CANCELLED, TransferState.FAILED})
# A receiver in one of these still counts towards the transfer's confirmed bytes.
_ACTIVE = frozenset({TransferState.ACCEPTED, TransferState.TRANSFERRING, TransferState.DONE})


@dataclass(slots=True)
class Receiver:
    user: UserId
    state: TransferState | str = TransferState.OFFERED
    bytes: int = 0


@dataclass(eq=False)
class Transfer:
    offer: FileOffer
    sender: ParticipantId
    sender_user: UserId
    receivers: dict[ParticipantId, Receiver]
    state: TransferState = TransferState.OFFERED
    sent: int = 0
    confirmed: int = 0
    via: str = "p2p"
    reason: str | None = None
    relay_path: Path | None = None
    relay_done: bool = False
    finished_at: float | None = None
    _samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64))

    @property
    def id(self) -> str:
        return self.offer.id

    @property
    def room(self) -> RoomId:
        return self.offer.room

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def parties(self) -> set[ParticipantId]:
        return {self.sender, *self.receivers}

    def rate(self, now: float) -> float:
        while self._samples and now - self._samples[0][0] > RATE_WINDOW:
            self._samples.popleft()
        if len(self._samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0

    def wire(self, now: float) -> dict[str, Any]:
        rate = 0.0 if self.final else self.rate(now)
        remaining = self.offer.size - self.confirmed
        out: dict[str, Any] = {
            "id": self.id, "room": self.room, "from": self.sender, "to": list(self.receivers),
            "name": self.offer.name, "size": self.offer.size, "mime": self.offer.mime,
            "sha256": self.offer.sha256, "state": self.state.value, "bytes": self.confirmed,
            "sent": self.sent, "rate": round(rate), "via": self.via,
            "eta": round(remaining / rate, 1) if rate > 0 and not self.final else None,
            "receivers": {pid: {"state": str(r.state), "bytes": r.bytes}
                          for pid, r in self.receivers.items()},
        }
        if self.reason is not None:
            out["reason"] = self.reason
        if self.relay_done:
            out["url"] = f"/api/files/{self.id}"
        return out


class FileService:
    """Every transfer of one node. Finished ones stay visible for `keep` seconds."""

    def __init__(self, max_bytes: int, keep: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self._keep = keep
        self._clock = clock
        self._transfers: dict[str, Transfer] = {}

    def offer(self, req: FileOffer, sender: Participant,
              receivers: list[Participant]) -> Transfer:
        self._expire()
        if req.id in self._transfers:
            raise Conflict(f"transfer id {req.id!r} is in use")
        if not receivers:
            raise NotFound("nobody to offer the file to")
        transfer = Transfer(offer=req, sender=sender.id, sender_user=sender.user,
                            receivers={p.id: Receiver(user=p.user) for p in receivers})
        self._transfers[req.id] = transfer
        return transfer

    def get(self, transfer_id: str) -> Transfer:
        transfer = self._transfers.get(transfer_id)
        if transfer is None:
            raise NotFound(f"no transfer {transfer_id!r}")
        return transfer

    def of_room(self, room: RoomId) -> list[Transfer]:
        return [t for t in self._transfers.values() if t.room == room]

    def answer(self, who: ParticipantId, transfer_id: str, accept: bool) -> Transfer:
        transfer, receiver = self._receiver(who, transfer_id)
        if receiver.state is not TransferState.OFFERED:
            raise Conflict(f"already answered ({receiver.state})")
        if accept:
            receiver.state = TransferState.ACCEPTED
            if transfer.state is TransferState.OFFERED:
                transfer.state = TransferState.ACCEPTED
        else:
            receiver.state = "rejected"
            if all(r.state == "rejected" for r in transfer.receivers.values()):
                self._finish(transfer, TransferState.CANCELLED, "rejected")
            else:
                self._settle(transfer)
        return transfer

    def progress(self, who: ParticipantId, transfer_id: str, count: int) -> tuple[Transfer, int]:
        transfer = self._live(transfer_id, who)
        if count > transfer.offer.size:
            raise BadRequest(f"bytes exceeds the file size ({transfer.offer.size})")
        if who == transfer.sender:
            transfer.sent = max(transfer.sent, count)
            recorded = transfer.sent
        else:
            receiver = transfer.receivers[who]
            if receiver.state not in (TransferState.ACCEPTED, TransferState.TRANSFERRING):
                raise Conflict(f"receiver is {receiver.state}")
            receiver.state = TransferState.TRANSFERRING
            receiver.bytes = max(receiver.bytes, count)
            recorded = receiver.bytes
            self._settle(transfer)
        if transfer.state is TransferState.ACCEPTED:
            transfer.state = TransferState.TRANSFERRING
        return transfer, recorded

    def done(self, who: ParticipantId, transfer_id: str, sha256: str) -> Transfer:
        transfer = self._live(transfer_id, who)
        if who == transfer.sender:
            transfer.sent = transfer.offer.size
            return transfer
        receiver = transfer.receivers[who]
        if receiver.state not in (TransferState.ACCEPTED, TransferState.TRANSFERRING):
            raise Conflict(f"receiver is {receiver.state}")
        if transfer.offer.sha256 is not None and sha256 != transfer.offer.sha256:
            receiver.state = TransferState.FAILED
            transfer.reason = "hash mismatch"
        else:
            receiver.state = TransferState.DONE
            receiver.bytes = transfer.offer.size
        self._settle(transfer)
        return transfer

    def cancel(self, who: ParticipantId, transfer_id: str, reason: str | None) -> Transfer:
        transfer = self._live(transfer_id, who)
        self._finish(transfer, TransferState.CANCELLED, reason or "cancelled")
        return transfer

    def participant_left(self, who: ParticipantId) -> list[Transfer]:
        """A party left its room: its transfers end (sender) or go on without it."""
        changed = []
        for transfer in self._transfers.values():
            if transfer.final or who not in transfer.parties():
                continue
            if who == transfer.sender:
                self._finish(transfer, TransferState.CANCELLED, "sender left")
            else:
                receiver = transfer.receivers[who]
                if receiver.state is not TransferState.DONE:
                    receiver.state = TransferState.CANCELLED
                self._settle(transfer)
            changed.append(transfer)
        return changed

    def relay_progress(self, transfer: Transfer, count: int) -> None:
        transfer.via = "relay"
        transfer.sent = max(transfer.sent, count)
        if transfer.state is TransferState.ACCEPTED:
            transfer.state = TransferState.TRANSFERRING

    def finished(self) -> list[Transfer]:
        return [t for t in self._transfers.values() if t.final]

    def remove(self, transfer_id: str) -> None:
        self._transfers.pop(transfer_id, None)

    # -- internals ----------------------------------------------------------------------

    def _receiver(self, who: ParticipantId, transfer_id: str) -> tuple[Transfer, Receiver]:
        transfer = self._live(transfer_id, who)
        receiver = transfer.receivers.get(who)
        if receiver is None:
            raise Forbidden("only a receiver of the transfer can do that")
        return transfer, receiver

    def _live(self, transfer_id: str, who: ParticipantId) -> Transfer:
        transfer = self.get(transfer_id)
        if who not in transfer.parties():
            raise Forbidden("not a party of this transfer")
        if transfer.final:
            raise Conflict(f"transfer is {transfer.state.value}")
        return transfer

    def _settle(self, transfer: Transfer) -> None:
        """Recompute confirmed bytes and the overall state from the receivers'."""
        states = [r.state for r in transfer.receivers.values()]
        active = [r.bytes for r in transfer.receivers.values() if r.state in _ACTIVE]
        if active:
            transfer.confirmed = max(transfer.confirmed, min(active))
            transfer._samples.append((self._clock(), transfer.confirmed))
        accepted = [s for s in states if s in _ACTIVE or s == TransferState.FAILED]
        if any(s in (TransferState.OFFERED, TransferState.ACCEPTED, TransferState.TRANSFERRING)
               for s in states):
            return
        if accepted and all(s == TransferState.DONE for s in accepted):
            self._finish(transfer, TransferState.DONE, None)
        elif TransferState.FAILED in states:
            self._finish(transfer, TransferState.FAILED, transfer.reason or "failed")
        else:
            self._finish(transfer, TransferState.CANCELLED, transfer.reason or "no receivers left")

    def _finish(self, transfer: Transfer, state: TransferState, reason: str | None) -> None:
        transfer.state = state
        transfer.reason = reason
        transfer.finished_at = self._clock()

    def _expire(self) -> None:
        now = self._clock()
        for transfer in list(self._transfers.values()):
            if transfer.finished_at is not None and now - transfer.finished_at > self._keep:
                del self._transfers[transfer.id]
