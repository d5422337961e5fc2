"""File transfers: who offered what to whom, each party's progress, and the transfer's state.

Transport-free. The bytes go peer to peer (or through the HTTP relay); this
service only keeps the state every party and observer is shown, as documents in the
store. Progress never goes backwards, and a final state is final.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .errors import BadRequest, Conflict, Forbidden, NotFound
from .ids import ParticipantId, RoomId, UserId
from .protocol import FileOffer
from .rooms import Participant
from .store import Store, Tx

RATE_WINDOW = 3.0  # seconds of progress samples behind `rate`
SAMPLES = 64


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
    relay_done: bool = False
    finished_at: float | None = None
    # (wall-clock time, confirmed bytes): nodes share wall clocks, not monotonic ones.
    samples: list[tuple[float, int]] = field(default_factory=list)

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
        recent = [(t, b) for t, b in self.samples if now - t <= RATE_WINDOW]
        if len(recent) < 2:
            return 0.0
        (t0, b0), (t1, b1) = recent[0], recent[-1]
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

    def to_dict(self) -> dict[str, Any]:
        o = self.offer
        return {"offer": {"room": o.room, "to": o.to, "id": o.id, "name": o.name, "size": o.size,
                          "mime": o.mime, "sha256": o.sha256},
                "sender": self.sender, "senderUser": self.sender_user,
                "receivers": {p: {"user": r.user, "state": str(r.state), "bytes": r.bytes}
                              for p, r in self.receivers.items()},
                "state": self.state.value, "sent": self.sent, "confirmed": self.confirmed,
                "via": self.via, "reason": self.reason, "relayDone": self.relay_done,
                "finishedAt": self.finished_at, "samples": self.samples}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Transfer:
        return cls(offer=FileOffer(**d["offer"]), sender=d["sender"],
                   sender_user=d["senderUser"],
                   receivers={p: Receiver(user=r["user"], state=_receiver_state(r["state"]),
                                          bytes=r["bytes"]) for p, r in d["receivers"].items()},
                   state=TransferState(d["state"]), sent=d["sent"], confirmed=d["confirmed"],
                   via=d["via"], reason=d["reason"], relay_done=d["relayDone"],
                   finished_at=d["finishedAt"], samples=[(t, b) for t, b in d["samples"]])


def _receiver_state(value: str) -> TransferState | str:
    try:
        return TransferState(value)
    except ValueError:
        return value  # "rejected"


def _key(transfer_id: str) -> str:
    return "transfer:" + transfer_id


def _room_key(room: RoomId) -> str:
    return "room-transfers:" + room


def _party_key(participant: ParticipantId) -> str:
    return "party-transfers:" + participant


class FileService:
    """Every transfer, in the store. Finished ones stay visible for `keep` seconds."""

    def __init__(self, store: Store, max_bytes: int, keep: float = 3600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.max_bytes = max_bytes
        self._store = store
        self._keep = keep
        self._clock = clock

    async def offer(self, req: FileOffer, sender: Participant,
                    receivers: list[Participant]) -> Transfer:
        if not receivers:
            raise NotFound("nobody to offer the file to")

        def offer(tx: Tx) -> Transfer:
            if tx.get(_key(req.id), Transfer) is not None:
                raise Conflict(f"transfer id {req.id!r} is in use")
            transfer = Transfer(offer=req, sender=sender.id, sender_user=sender.user,
                                receivers={p.id: Receiver(user=p.user) for p in receivers})
            tx.put(_key(req.id), transfer)
            tx.add(_room_key(req.room), req.id)
            for party in transfer.parties():
                tx.add(_party_key(party), req.id)
            return transfer

        return await self._store.transact([_key(req.id)], offer)

    async def get(self, transfer_id: str) -> Transfer:
        transfer = await self._store.get(_key(transfer_id), Transfer)
        if transfer is None:
            raise NotFound(f"no transfer {transfer_id!r}")
        return transfer

    async def of_room(self, room: RoomId) -> list[Transfer]:
        ids = sorted(await self._store.members(_room_key(room)))
        found = await self._store.get_many([_key(i) for i in ids], Transfer)
        gone = [i for i, t in zip(ids, found, strict=True) if t is None]
        if gone:  # expired: forget them in the index too
            await self._store.transact([], lambda tx: [tx.discard(_room_key(room), i)
                                                       for i in gone])
        return [t for t in found if t is not None]

    async def answer(self, who: ParticipantId, transfer_id: str, accept: bool) -> Transfer:
        def answer(tx: Tx) -> Transfer:
            transfer, receiver = self._receiver(tx, who, transfer_id)
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
            self._put(tx, transfer)
            return transfer

        return await self._store.transact([_key(transfer_id)], answer)

    async def progress(self, who: ParticipantId, transfer_id: str,
                       count: int) -> tuple[Transfer, int]:
        def progress(tx: Tx) -> tuple[Transfer, int]:
            transfer = self._live(tx, transfer_id, who)
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
            self._put(tx, transfer)
            return transfer, recorded

        return await self._store.transact([_key(transfer_id)], progress)

    async def done(self, who: ParticipantId, transfer_id: str, sha256: str) -> Transfer:
        def done(tx: Tx) -> Transfer:
            transfer = self._live(tx, transfer_id, who)
            if who == transfer.sender:
                transfer.sent = transfer.offer.size
                self._put(tx, transfer)
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
            self._put(tx, transfer)
            return transfer

        return await self._store.transact([_key(transfer_id)], done)

    async def cancel(self, who: ParticipantId, transfer_id: str,
                     reason: str | None) -> Transfer:
        def cancel(tx: Tx) -> Transfer:
            transfer = self._live(tx, transfer_id, who)
            self._finish(transfer, TransferState.CANCELLED, reason or "cancelled")
            self._put(tx, transfer)
            return transfer

        return await self._store.transact([_key(transfer_id)], cancel)

    async def participant_left(self, who: ParticipantId) -> list[Transfer]:
        """A party left its room: its transfers end (sender) or go on without it."""
        changed = []
        for transfer_id in sorted(await self._store.members(_party_key(who))):
            transfer = await self._store.transact(
                [_key(transfer_id)], functools.partial(self._left, who=who,
                                                       transfer_id=transfer_id))
            if transfer is not None:
                changed.append(transfer)
        return changed

    def _left(self, tx: Tx, who: ParticipantId, transfer_id: str) -> Transfer | None:
        tx.discard(_party_key(who), transfer_id)
        transfer = tx.get(_key(transfer_id), Transfer)
        if transfer is None or transfer.final or who not in transfer.parties():
            return None
        if who == transfer.sender:
            self._finish(transfer, TransferState.CANCELLED, "sender left")
        else:
            receiver = transfer.receivers[who]
            if receiver.state is not TransferState.DONE:
                receiver.state = TransferState.CANCELLED
            self._settle(transfer)
        self._put(tx, transfer)
        return transfer

    async def relay_progress(self, transfer_id: str, count: int, *,
                             complete: bool = False) -> Transfer:
        """Bytes the sender uploaded to the relay; `complete` when the file is all there."""

        def relayed(tx: Tx) -> Transfer:
            transfer = tx.get(_key(transfer_id), Transfer)
            if transfer is None:
                raise NotFound(f"no transfer {transfer_id!r}")
            transfer.via = "relay"
            transfer.sent = max(transfer.sent, count)
            transfer.relay_done = transfer.relay_done or complete
            if transfer.state is TransferState.ACCEPTED:
                transfer.state = TransferState.TRANSFERRING
            self._put(tx, transfer)
            return transfer

        return await self._store.transact([_key(transfer_id)], relayed)

    async def relay_gone(self, transfer_id: str) -> None:
        """The relayed file was deleted (expired)."""

        def gone(tx: Tx) -> None:
            transfer = tx.get(_key(transfer_id), Transfer)
            if transfer is not None and transfer.relay_done:
                transfer.relay_done = False
                self._put(tx, transfer)

        await self._store.transact([_key(transfer_id)], gone)

    # -- internals ----------------------------------------------------------------------

    def _put(self, tx: Tx, transfer: Transfer) -> None:
        tx.put(_key(transfer.id), transfer, ttl=self._keep if transfer.final else None)
        if transfer.final:
            for party in transfer.parties():
                tx.discard(_party_key(party), transfer.id)

    def _receiver(self, tx: Tx, who: ParticipantId,
                  transfer_id: str) -> tuple[Transfer, Receiver]:
        transfer = self._live(tx, transfer_id, who)
        receiver = transfer.receivers.get(who)
        if receiver is None:
            raise Forbidden("only a receiver of the transfer can do that")
        return transfer, receiver

    @staticmethod
    def _live(tx: Tx, transfer_id: str, who: ParticipantId) -> Transfer:
        transfer = tx.get(_key(transfer_id), Transfer)
        if transfer is None:
            raise NotFound(f"no transfer {transfer_id!r}")
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
            transfer.samples = [*transfer.samples[-(SAMPLES - 1):],
                                (self._clock(), transfer.confirmed)]
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
