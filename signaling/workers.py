"""Media workers known to this node: what each can do, how loaded it is, the jobs it runs.

Transport-free like the other services: workers and requesters are sessions, and
the edge delivers what these methods return. A worker is chosen by load relative
to its capacity; its reported load lags, so each job assigned since its last report
counts as one more unit until the next one arrives.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from .errors import Forbidden, NotFound, Unavailable
from .ids import ParticipantId, RoomId, SessionId
from .protocol import MediaKind, WorkerRegistration


@dataclass(eq=False)
class Job:
    id: str
    kind: MediaKind
    room: RoomId
    worker: Worker
    requester: SessionId
    # The requester's participant in `room`; the job ends when it leaves.
    participant: ParticipantId
    # The worker's hidden participant in `room`, once the worker accepted the job.
    worker_participant: ParticipantId | None = None
    # Whether the worker recorded from the room's forwarding instead of upstream connections.
    tapped: bool = False


@dataclass(eq=False)
class Worker:
    session: SessionId
    capacity: int
    kinds: frozenset[MediaKind]
    load: float = 0.0
    unreported: int = 0
    jobs: dict[str, Job] = field(default_factory=dict)

    def score(self) -> float:
        return (self.load + self.unreported) / self.capacity


class WorkerRegistry:
    """Every registered worker of this node and every job it was given."""

    def __init__(self) -> None:
        self._workers: dict[SessionId, Worker] = {}
        self._jobs: dict[str, Job] = {}

    def register(self, session: SessionId, reg: WorkerRegistration) -> Worker:
        """Add a worker, or update its capacity and kinds when it registers again."""
        worker = self._workers.get(session)
        if worker is None:
            worker = self._workers[session] = Worker(session, reg.capacity, reg.kinds)
        else:
            worker.capacity, worker.kinds = reg.capacity, reg.kinds
        return worker

    def worker(self, session: SessionId) -> Worker:
        worker = self._workers.get(session)
        if worker is None:
            raise Forbidden("this session is not a registered media worker")
        return worker

    def __len__(self) -> int:
        return len(self._workers)

    def is_worker(self, session: SessionId) -> bool:
        return session in self._workers

    def report_load(self, session: SessionId, load: float) -> None:
        worker = self.worker(session)
        worker.load, worker.unreported = load, 0

    def candidates(self, kind: MediaKind) -> list[Worker]:
        """Workers that do `kind` and have room for more, least loaded first;
        Unavailable when there is none (an overloaded worker degrades every call on it)."""
        able = [w for w in self._workers.values() if kind in w.kinds]
        if not able:
            raise Unavailable(f"no media worker can do {kind.value} now")
        free = [w for w in able if w.score() < 1]
        if not free:
            raise Unavailable(f"every media worker that can do {kind.value} is at capacity")
        return sorted(free, key=Worker.score)

    def start(self, worker: Worker, kind: MediaKind, room: RoomId, requester: SessionId,
              participant: ParticipantId) -> Job:
        job = Job("J" + secrets.token_hex(8), kind, room, worker, requester, participant)
        worker.jobs[job.id] = job
        worker.unreported += 1
        self._jobs[job.id] = job
        return job

    def job(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no media job {job_id!r}")
        return job

    def end(self, job_id: str) -> Job | None:
        """Forget a job; None when it had already ended."""
        job = self._jobs.pop(job_id, None)
        if job is not None:
            job.worker.jobs.pop(job_id, None)
        return job

    def jobs_of(self, participant: ParticipantId) -> list[Job]:
        """The jobs a participant requested."""
        return [j for j in self._jobs.values() if j.participant == participant]

    def unregister(self, session: SessionId) -> list[Job]:
        """The worker is gone: drop it and return the jobs it leaves behind, ended."""
        worker = self._workers.pop(session, None)
        if worker is None:
            return []
        jobs = list(worker.jobs.values())
        for job in jobs:
            self._jobs.pop(job.id, None)
        worker.jobs.clear()
        return jobs
