"""Media workers: what each can do, how loaded it is, the jobs it runs.

Transport-free like the other services: workers and requesters are sessions, and
the edge delivers what these methods return. Workers and jobs are documents in the
store, so a worker connected to one node serves every node. A worker is chosen by
load relative to its capacity; its reported load lags, so each job assigned since
its last report counts as one more unit until the next one arrives.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from .errors import Forbidden, NotFound, Unavailable
from .ids import ParticipantId, RoomId, SessionId
from .protocol import MediaKind, WorkerRegistration
from .store import Store, Tx


@dataclass(eq=False)
class Job:
    id: str
    kind: MediaKind
    room: RoomId
    worker: SessionId
    requester: SessionId
    # The requester's participant in `room`; the job ends when it leaves.
    participant: ParticipantId
    # The worker's hidden participant in `room`, once the worker accepted the job.
    worker_participant: ParticipantId | None = None
    # Whether the worker recorded from the room's forwarding instead of upstream connections.
    tapped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind.value, "room": self.room, "worker": self.worker,
                "requester": self.requester, "participant": self.participant,
                "workerParticipant": self.worker_participant, "tapped": self.tapped}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        return cls(id=d["id"], kind=MediaKind(d["kind"]), room=d["room"], worker=d["worker"],
                   requester=d["requester"], participant=d["participant"],
                   worker_participant=d["workerParticipant"], tapped=d["tapped"])


@dataclass(eq=False)
class Worker:
    session: SessionId
    capacity: int
    kinds: frozenset[MediaKind]
    load: float = 0.0
    unreported: int = 0

    def score(self) -> float:
        return (self.load + self.unreported) / self.capacity

    def to_dict(self) -> dict[str, Any]:
        return {"session": self.session, "capacity": self.capacity,
                "kinds": sorted(k.value for k in self.kinds), "load": self.load,
                "unreported": self.unreported}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Worker:
        return cls(session=d["session"], capacity=d["capacity"],
                   kinds=frozenset(MediaKind(k) for k in d["kinds"]), load=d["load"],
                   unreported=d["unreported"])


WORKERS = "workers"


def _worker_key(session: SessionId) -> str:
    return "worker:" + session


def _job_key(job_id: str) -> str:
    return "job:" + job_id


def _worker_jobs_key(session: SessionId) -> str:
    return "worker-jobs:" + session


def _party_jobs_key(participant: ParticipantId) -> str:
    return "party-jobs:" + participant


class WorkerRegistry:
    """Every registered worker and every job it was given, in the store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def register(self, session: SessionId, reg: WorkerRegistration) -> Worker:
        """Add a worker, or update its capacity and kinds when it registers again."""

        def register(tx: Tx) -> Worker:
            worker = tx.get(_worker_key(session), Worker)
            if worker is None:
                worker = Worker(session, reg.capacity, reg.kinds)
            else:
                worker.capacity, worker.kinds = reg.capacity, reg.kinds
            tx.put(_worker_key(session), worker)
            tx.add(WORKERS, session)
            return worker

        return await self._store.transact([_worker_key(session)], register)

    async def worker(self, session: SessionId) -> Worker:
        worker = await self._store.get(_worker_key(session), Worker)
        if worker is None:
            raise Forbidden("this session is not a registered media worker")
        return worker

    async def all(self) -> list[Worker]:
        ids = sorted(await self._store.members(WORKERS))
        found = await self._store.get_many([_worker_key(SessionId(i)) for i in ids], Worker)
        return [w for w in found if w is not None]

    async def report_load(self, session: SessionId, load: float) -> None:
        def report(tx: Tx) -> None:
            worker = tx.get(_worker_key(session), Worker)
            if worker is None:
                raise Forbidden("this session is not a registered media worker")
            worker.load, worker.unreported = load, 0
            tx.put(_worker_key(session), worker)

        await self._store.transact([_worker_key(session)], report)

    async def candidates(self, kind: MediaKind) -> list[Worker]:
        """Workers that do `kind` and have room for more, least loaded first;
        Unavailable when there is none (an overloaded worker degrades every call on it)."""
        able = [w for w in await self.all() if kind in w.kinds]
        if not able:
            raise Unavailable(f"no media worker can do {kind.value} now")
        free = [w for w in able if w.score() < 1]
        if not free:
            raise Unavailable(f"every media worker that can do {kind.value} is at capacity")
        return sorted(free, key=Worker.score)

    async def start(self, worker: SessionId, kind: MediaKind, room: RoomId,
                    requester: SessionId, participant: ParticipantId) -> Job:
        job = Job("J" + secrets.token_hex(8), kind, room, worker, requester, participant)

        def start(tx: Tx) -> Job:
            found = tx.get(_worker_key(worker), Worker)
            if found is None:
                raise Unavailable("the media worker is gone")
            found.unreported += 1
            tx.put(_worker_key(worker), found)
            tx.put(_job_key(job.id), job)
            tx.add(_worker_jobs_key(worker), job.id)
            tx.add(_party_jobs_key(participant), job.id)
            return job

        return await self._store.transact([_worker_key(worker)], start)

    async def accepted(self, job_id: str, worker_participant: ParticipantId,
                       tapped: bool) -> Job:
        """The worker took the job with its hidden participant."""

        def accepted(tx: Tx) -> Job:
            job = tx.get(_job_key(job_id), Job)
            if job is None:
                raise NotFound(f"no media job {job_id!r}")
            job.worker_participant, job.tapped = worker_participant, tapped
            tx.put(_job_key(job_id), job)
            return job

        return await self._store.transact([_job_key(job_id)], accepted)

    async def job(self, job_id: str) -> Job:
        job = await self._store.get(_job_key(job_id), Job)
        if job is None:
            raise NotFound(f"no media job {job_id!r}")
        return job

    async def end(self, job_id: str) -> Job | None:
        """Forget a job; None when it had already ended."""

        def end(tx: Tx) -> Job | None:
            job = tx.get(_job_key(job_id), Job)
            if job is not None:
                _forget(tx, job)
            return job

        return await self._store.transact([_job_key(job_id)], end)

    async def jobs_of(self, participant: ParticipantId) -> list[Job]:
        """The jobs a participant requested."""
        return await self._jobs(_party_jobs_key(participant))

    async def unregister(self, session: SessionId) -> list[Job]:
        """The worker is gone: drop it and return the jobs it leaves behind, ended."""
        jobs = await self._jobs(_worker_jobs_key(session))

        def unregister(tx: Tx) -> list[Job]:
            if tx.get(_worker_key(session), Worker) is None:
                return []
            tx.delete(_worker_key(session))
            tx.discard(WORKERS, session)
            ended = []
            for job in jobs:
                if tx.get(_job_key(job.id), Job) is not None:
                    _forget(tx, job)
                    ended.append(job)
            return ended

        return await self._store.transact(
            [_worker_key(session), *(_job_key(j.id) for j in jobs)], unregister)

    async def _jobs(self, index: str) -> list[Job]:
        ids = sorted(await self._store.members(index))
        found = await self._store.get_many([_job_key(i) for i in ids], Job)
        return [j for j in found if j is not None]


def _forget(tx: Tx, job: Job) -> None:
    tx.delete(_job_key(job.id))
    tx.discard(_worker_jobs_key(job.worker), job.id)
    tx.discard(_party_jobs_key(job.participant), job.id)
