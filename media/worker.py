"""The media worker process: a hidden participant that runs echo tests (and, later, more).

It connects to a signaling node with a service token, registers what it can do,
and takes jobs the node assigns with `media:assign`: it joins the job's room as a
hidden participant and answers the requester's offer. Signals reach a job by
(room, sender); a job ends when the node says so (`media:ended`), when it finishes,
or when the worker loses its session (the node has failed its jobs by then).

    worker = MediaWorker(url, token)
    await worker.start()        # connects (retrying), registers
    ...
    await worker.close()        # ends every job, leaves, disconnects
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from signaling.client import (
    Event,
    MediaEnded,
    ParticipantInfo,
    ParticipantJoined,
    ParticipantLeft,
    RequestError,
    SessionStarted,
    SignalingClient,
    SignalReceived,
)
from signaling.ids import ParticipantId, RoomId

from .echo import EchoJob
from .forward import ForwardJob
from .ice import rtc_configuration
from .link import SendSignal
from .passthrough import check_aiortc_version
from .recording import RecordJob
from .taskutil import cancel_and_wait, finish

log = logging.getLogger(__name__)

KINDS = ("echo", "record", "forward")
Job = EchoJob | RecordJob | ForwardJob
_CONNECT_BACKOFF = (0.2, 5.0)  # first and largest delay between connect attempts
LOAD_REPORT_INTERVAL = 1.0  # seconds between checks for a changed load


def _unavailable(message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": "unavailable", "message": message}}


class MediaWorker:
    """Owns one SignalingClient and every job it runs."""

    def __init__(self, url: str, token: str | Callable[[], str], *, capacity: int = 200,
                 recordings_dir: Path = Path("recordings"), relay_only: bool = False) -> None:
        check_aiortc_version()  # refuse to start on an aiortc the passthrough hook doesn't know
        self.capacity = capacity
        self.recordings_dir = recordings_dir
        self._relay_only = relay_only
        self._client = SignalingClient(url, token)
        self._client.serve("media:assign", self._assign)
        self._client.subscribe(self._on_event)
        self._jobs: dict[str, Job] = {}
        self._job_rooms: dict[str, RoomId] = {}
        # Our hidden participant and ICE servers in each room we have a job in.
        self._rooms: dict[RoomId, tuple[ParticipantId, list[dict[str, Any]]]] = {}
        # Who is in each of those rooms (for recordings' catalogs).
        self._rosters: dict[RoomId, dict[ParticipantId, ParticipantInfo]] = {}
        self._registered = asyncio.Event()
        self._reported_load = 0
        self._entering = asyncio.Lock()  # one join per room, however many jobs arrive at once
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def jobs(self) -> dict[str, Job]:
        return dict(self._jobs)

    @property
    def load(self) -> int:
        return sum(job.load for job in self._jobs.values())

    async def start(self) -> None:
        """Connect (retrying until the node is up) and register."""
        delay, longest = _CONNECT_BACKOFF
        while True:
            try:
                await self._client.connect()
                break
            except RequestError as exc:
                if exc.code in ("unauthorized", "forbidden"):
                    raise
                log.info("media worker: node not reachable yet (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, longest)
        await self._register()
        self._spawn(self._watch_load())

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            await cancel_and_wait(task)
        await self._end_all()
        await self._client.close()

    # -- node ----------------------------------------------------------------------------

    async def _register(self) -> None:
        await self._client.request("worker:register",
                                   {"capacity": self.capacity, "kinds": list(KINDS)})
        self._registered.set()
        log.info("media worker registered (capacity %d)", self.capacity)

    async def _assign(self, data: Any) -> dict[str, Any]:
        job_id, room, kind = str(data["job"]), RoomId(data["room"]), data["kind"]
        requester = ParticipantId(data["requester"]["id"])
        if kind not in KINDS:
            return _unavailable(f"this worker does not do {kind}")
        me, servers = await self._enter(room)
        if self._closing:  # checked after the join: close() would not end a job made now
            return _unavailable("this worker is closing")
        configuration = rtc_configuration(servers, relay_only=self._relay_only)
        job: Job
        if kind == "echo":
            job = EchoJob(job_id, requester, duration=float(data["duration"]),
                          configuration=configuration, send=self._sender(room, requester),
                          send_report=lambda r: self._report(job_id, r), on_done=self._job_done)
        elif kind == "forward":
            job = ForwardJob(job_id, room, configuration=configuration,
                             sender=lambda to, pc: self._sender(room, to, pc))
        else:
            source = self._jobs.get(str(data.get("tap")))
            job = RecordJob(job_id, str(data["recording"]), room, directory=self.recordings_dir,
                            started_at=float(data["startedAt"]) / 1000, by=str(data["by"]),
                            configuration=configuration,
                            sender=lambda to: self._sender(room, to, "record"),
                            roster=self._rosters.setdefault(room, {}),
                            source=source if isinstance(source, ForwardJob) else None)
        self._jobs[job_id] = job
        self._job_rooms[job_id] = room
        self._spawn(self._report_load())
        log.info("job %s: %s for %s in %s", job_id, kind, requester, room)
        return {"ok": True, "participant": me,
                "tapped": isinstance(job, RecordJob) and job.tapped}

    async def _enter(self, room: RoomId) -> tuple[ParticipantId, list[dict[str, Any]]]:
        async with self._entering:
            if room not in self._rooms:
                joined = await self._client.join(room, hidden=True)
                self._rooms[room] = (joined.self_id, list(joined.ice_servers))
                self._rosters.setdefault(room, {}).update(
                    (p.id, p) for p in joined.participants)
            return self._rooms[room]

    def _sender(self, room: RoomId, to: ParticipantId, pc: str | None = None) -> SendSignal:
        async def send(message: dict[str, Any]) -> None:
            try:
                await self._client.signal(room, to, pc=pc, **message)
            except RequestError as exc:
                log.info("signal to %s refused: %s", to, exc)

        return send

    async def _report(self, job_id: str, report: dict[str, Any]) -> None:
        try:
            await self._client.request("media:report", {"job": job_id, "report": report})
        except RequestError as exc:
            log.info("report for job %s not delivered: %s", job_id, exc)

    async def _report_load(self) -> None:
        load = self.load
        try:
            await self._client.request("worker:load", {"load": load})
            self._reported_load = load
        except RequestError as exc:
            log.info("load report failed: %s", exc)

    async def _watch_load(self) -> None:
        """Report load that changed within a job (tracks of a recording or forwarding
        coming and going), not only when jobs start and end."""
        while not self._closing:
            await asyncio.sleep(LOAD_REPORT_INTERVAL)
            if self.load != self._reported_load and self._client.connected:
                await self._report_load()

    # -- events --------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if isinstance(event, SignalReceived):
            self._route(event)
        elif isinstance(event, MediaEnded):
            self._spawn(self._end(event.job, tell_node=False))
        elif isinstance(event, ParticipantJoined):
            self._rosters.setdefault(event.room, {})[event.participant.id] = event.participant
        elif isinstance(event, ParticipantLeft):
            self._rosters.get(event.room, {}).pop(event.id, None)
            for job_id, job in list(self._jobs.items()):
                if isinstance(job, EchoJob) and job.requester == event.id:
                    self._spawn(self._end(job_id, tell_node=False))
                elif isinstance(job, RecordJob | ForwardJob) and job.room == event.room:
                    self._spawn(self._participant_left(job, event.id))
        elif isinstance(event, SessionStarted) and not event.resumed and self._registered.is_set():
            # The node dropped our session (and failed our jobs): start over.
            self._rooms.clear()
            self._spawn(self._restart())

    def _route(self, signal: SignalReceived) -> None:
        """By its `pc` tag: the room's recording (`record`) or forwarding (`up`, `down`);
        untagged, the echo test its sender asked for."""
        for j, job in self._jobs.items():
            if self._job_rooms[j] != signal.room:
                continue
            if ((signal.pc == "record" and isinstance(job, RecordJob))
                    or (signal.pc in ("up", "down") and isinstance(job, ForwardJob))
                    or (signal.pc is None and isinstance(job, EchoJob)
                        and job.requester == signal.sender)):
                job.deliver(signal)
                return
        log.debug("signal from %s in %s matches no job", signal.sender, signal.room)

    async def _restart(self) -> None:
        await self._end_all(tell_node=False)
        await self._register()

    def _job_done(self, job: EchoJob) -> None:
        self._spawn(self._end(job.id, tell_node=True))

    @staticmethod
    async def _participant_left(job: RecordJob | ForwardJob, participant: ParticipantId) -> None:
        # Whole, like a job's close in _end: it closes connections it has already let go of.
        # A coroutine of its own, so that a task cancelled before its first step has not
        # made the job's coroutine yet (one never awaited would be reported).
        await finish(job.participant_left(participant))

    async def _end(self, job_id: str, *, tell_node: bool) -> None:
        job = self._jobs.pop(job_id, None)
        room = self._job_rooms.pop(job_id, None)
        if job is None or room is None:
            return
        # To its end even if we are cancelled (close() cancels this task, _restart's
        # caller cancels that one): nobody else holds the job any more.
        await finish(job.close())
        if tell_node and self._client.connected:
            try:
                await self._client.release_media(job_id)
            except RequestError as exc:
                log.debug("release of %s: %s", job_id, exc)
        if room not in self._job_rooms.values() and room in self._rooms:
            del self._rooms[room]
            self._rosters.pop(room, None)
            if self._client.connected:
                try:
                    await self._client.leave(room)
                except RequestError as exc:
                    log.debug("leaving %s: %s", room, exc)
        await self._report_load()

    async def _end_all(self, *, tell_node: bool = True) -> None:
        for job_id in list(self._jobs):
            await self._end(job_id, tell_node=tell_node)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
