"""A headless room participant that sends synthetic media to everyone and counts what it gets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from aiortc import RTCConfiguration, RTCDataChannel

from signaling.client import (
    Disconnected,
    Event,
    FileState,
    JoinedRoom,
    MediaEnded,
    MediaReport,
    ParticipantJoined,
    ParticipantLeft,
    RecordingState,
    RequestError,
    RoomModeChanged,
    SessionStarted,
    SignalingClient,
    SignalReceived,
)
from signaling.ids import ParticipantId, RoomId

from .files import AcceptPolicy, FileTransfers, OutgoingFile
from .forwarded import ForwardedMedia
from .ice import rtc_configuration
from .link import LinkStats, PeerLink, SendSignal
from .taskutil import cancel_and_wait, finish
from .tracks import SyntheticMedia

log = logging.getLogger(__name__)

_ROOM_SCOPED = (SignalReceived, ParticipantJoined, ParticipantLeft, RecordingState,
                RoomModeChanged)

_POLL_INTERVAL = 0.05


@dataclass(frozen=True, slots=True)
class EchoResult:
    """An echo test as the client saw it: the worker's report and what came back."""

    job: str
    worker: ParticipantId
    # The worker's `report` (docs/protocol.md, "The echo report"), or None if the job
    # ended first (`ended` says why).
    report: dict[str, Any] | None
    returned: LinkStats
    ended: MediaEnded | None = None


class HeadlessPeer:
    """Joins one room through a connected `SignalingClient` and calls every other participant.

    Per docs/protocol.md ("Who offers first"): it offers to each participant its join
    ack lists, and answers a participant who joins later when that one's first offer
    arrives. Each remote participant gets its own `PeerLink` (one RTCPeerConnection,
    one fresh pair of synthetic tracks, a frame counter per received track); a
    participant leaving closes its link. See `PeerLink` for negotiation and glare.

    The caller owns the client: `close()` leaves the room but does not disconnect.

        peer = HeadlessPeer(client, media=SyntheticMedia(320, 240, fps=15))
        await peer.join("standup")
        await peer.wait_for_media(min_video_frames=10, min_audio_frames=10)
        await peer.close()
    """

    def __init__(self, client: SignalingClient, *, media: SyntheticMedia | None = None,
                 ice_servers: Sequence[Mapping[str, Any]] | None = None,
                 relay_only: bool = False, accept_files: bool | AcceptPolicy | None = None,
                 file_dir: Path | None = None, send_loss: float = 0.0) -> None:
        """`ice_servers` replaces the join ack's list (same wire shape); `relay_only`
        restricts ICE to TURN relay candidates. `accept_files` (True, or a callback given
        the `offered` FileState) accepts files offered to this peer, kept in memory or
        written to `file_dir`; see `files` and `send_file`. `send_loss` drops that
        fraction of the RTP we send (media.impair: a lossy network, for tests)."""
        self._client = client
        self._media = media if media is not None else SyntheticMedia()
        self._ice_override = ice_servers
        self._relay_only = relay_only
        self._send_loss = send_loss
        self._joined: JoinedRoom | None = None
        self._configuration: RTCConfiguration | None = None
        self._links: dict[ParticipantId, PeerLink] = {}
        # While the room is recorded: our one connection sending our media to the worker.
        self._upstream: PeerLink | None = None
        # Our perfect-negotiation role toward participants who joined after us but
        # whose first offer has not come yet.
        self._later_joiners: dict[ParticipantId, bool] = {}
        # Participants who left: a straggling signal from one must not open a new link.
        self._gone: set[ParticipantId] = set()
        # Everyone else in the room now (to mesh again when forwarding ends).
        self._roster: set[ParticipantId] = set()
        # While the room forwards through a media worker (then there are no mesh links).
        self.forwarded: ForwardedMedia | None = None
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._unsubscribe: Callable[[], None] | None = None
        self._join_started = False
        self._router: asyncio.Task[None] | None = None
        self._in_room = False
        self._closing = False
        # Why the node removed us from the room (`kicked`, `closed`, `timeout`), if it did.
        self.removed: str | None = None
        self._close_task: asyncio.Task[None] | None = None
        # Peer-to-peer file transfers (media.files), over data channels of the links.
        self.files = FileTransfers(client, self, accept=accept_files, directory=file_dir)

    # -- lifecycle -------------------------------------------------------------------

    async def join(self, room: str, *, name: str | None = None,
                   meta: dict[str, Any] | None = None) -> JoinedRoom:
        """Join `room` and offer to everyone already there. Only once per peer."""
        if self._join_started or self._close_task is not None:
            raise RuntimeError("a HeadlessPeer joins one room once")
        self._join_started = True
        # Subscribe first: events may arrive before the ack is handled. They wait in the
        # queue until the router starts, after the links for the ack's participants exist.
        self._unsubscribe = self._client.subscribe(self._events.put_nowait)
        try:
            joined = await self._client.join(room, name=name, meta=meta)
        except BaseException:
            self._stop_listening()
            raise
        self._joined, self._in_room = joined, True
        if self._closing:  # close() ran while we waited for the ack: undo the join
            await self._client.leave(joined.room)
            raise RuntimeError("the peer was closed while joining")
        servers = joined.ice_servers if self._ice_override is None else self._ice_override
        self._configuration = rtc_configuration(servers, relay_only=self._relay_only)
        self._roster = {p.id for p in joined.participants}
        if joined.mode == "forward" and joined.worker is not None:
            self._forward_through(joined.worker)
        for participant in joined.participants if self.forwarded is None else ():
            # We joined later, so we are polite; the ack says so too.
            polite = True if participant.polite is None else participant.polite
            self._open_link(participant.id, polite).offer()
        recording = joined.recording
        if recording is not None and recording.get("worker") and recording.get("upstream", True):
            self._open_upstream(ParticipantId(recording["worker"]))
        self._router = asyncio.create_task(self._route(), name=f"media-peer:{joined.self_id}")
        return joined

    async def close(self) -> None:
        """Leave the room, close every peer connection and stop every task. Idempotent.

        Like `PeerLink.close`, the work runs to its end even if the caller is cancelled.
        """
        if self._close_task is None:
            self._closing = True
            self._close_task = asyncio.create_task(self._close(), name="media-peer-close")
        await finish(self._close_task)

    async def _close(self) -> None:
        try:
            self._stop_listening()
            if self._router is not None:
                await cancel_and_wait(self._router)
            if self._joined is not None and self._in_room and self._client.connected:
                self._in_room = False
                try:
                    await self._client.leave(self._joined.room)
                except RequestError as exc:
                    log.info("leaving %s: %s", self._joined.room, exc)
            await self.files.close()
            await self._close_links()
        except Exception:
            log.exception("closing the peer failed")

    def send_file(self, to: str, source: bytes | str | Path, *, name: str,
                  mime: str = "application/octet-stream",
                  file_id: str | None = None) -> OutgoingFile:
        """Offer a file (bytes or a path) to participant `to` and send it over a data
        channel once accepted; `await result.wait()` for the final file:state."""
        self._require_joined()
        return self.files.send(to, source, name=name, mime=mime, file_id=file_id)

    async def echo_test(self, *, duration: float | None = None,
                        # A parameter: the probe and tests pass their own bound.
                        timeout: float = 90.0) -> EchoResult:  # noqa: ASYNC109
        """Run the echo test with a media worker: send our media to it, count what it sends
        back, and return its report. Raises RequestError (`unavailable`) without a worker."""
        room = self._require_joined().room
        outcome: asyncio.Future[MediaReport | MediaEnded] = (
            asyncio.get_running_loop().create_future())
        job_id: list[str] = []

        def watch(event: Event) -> None:
            if (isinstance(event, MediaReport | MediaEnded) and job_id
                    and event.job == job_id[0] and not outcome.done()):
                outcome.set_result(event)

        unsubscribe = self._client.subscribe(watch)
        link: PeerLink | None = None
        try:
            job = await self._client.request_media(room, "echo", duration=duration)
            job_id.append(job.job)
            link = self._open_link(job.worker, polite=False)
            link.offer()
            result = await asyncio.wait_for(outcome, timeout)
            stats = link.stats()
        finally:
            unsubscribe()
            if link is not None:
                await link.close()
                self._links.pop(link.remote, None)
        if isinstance(result, MediaReport):
            with contextlib.suppress(RequestError):
                await self._client.release_media(job.job)
            return EchoResult(job.job, job.worker, result.report, stats)
        return EchoResult(job.job, job.worker, None, stats, ended=result)

    # -- what tests and tools look at ------------------------------------------------

    @property
    def id(self) -> ParticipantId:
        return self._require_joined().self_id

    @property
    def room(self) -> RoomId:
        return self._require_joined().room

    @property
    def configuration(self) -> RTCConfiguration:
        """What every peer connection of this peer is made with (set by `join`)."""
        if self._configuration is None:
            raise RuntimeError("the peer has not joined a room")
        return self._configuration

    @property
    def links(self) -> Mapping[ParticipantId, PeerLink]:
        """The open link to each remote participant (a read-only live view)."""
        return MappingProxyType(self._links)

    def stats(self) -> dict[ParticipantId, LinkStats]:
        """What each other participant has sent us: over its mesh link, or forwarded."""
        if self.forwarded is not None:
            return self.forwarded.stats()
        return {pid: link.stats() for pid, link in self._links.items()}

    async def wait_for_media(self, *, min_video_frames: int = 1, min_audio_frames: int = 1,
                             participants: Collection[ParticipantId] | None = None,
                             # A parameter, not asyncio.timeout: the error then carries the stats.
                             timeout: float = 20.0,  # noqa: ASYNC109
                             ) -> dict[ParticipantId, LinkStats]:
        """Wait until each of `participants` (default: every linked one, at least one)
        has sent us that many video and audio frames; return their stats.

        Raises TimeoutError, with the stats so far, after `timeout` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            stats = self.stats()
            wanted = list(stats) if participants is None else list(participants)
            if wanted and all(
                p in stats and stats[p].video_frames >= min_video_frames
                and stats[p].audio_frames >= min_audio_frames for p in wanted
            ):
                return {p: stats[p] for p in wanted}
            if loop.time() >= deadline:
                raise TimeoutError(f"media did not arrive within {timeout}s: {stats}")
            # Polling: frames arrive at 50+ per second, an event per frame is not worth it.
            await asyncio.sleep(_POLL_INTERVAL)

    # -- events ----------------------------------------------------------------------

    async def _route(self) -> None:
        while not self._closing:
            event = await self._events.get()
            try:
                await self._handle(event)
            except Exception:
                log.exception("handling %s failed", type(event).__name__)

    async def _handle(self, event: Event) -> None:
        room = self._require_joined().room
        if isinstance(event, Disconnected) or (
            isinstance(event, SessionStarted) and room in event.rooms
        ):
            # Closed for good, or the session could not be resumed: the node has dropped
            # us from the room, so there is nothing to leave any more. (A resumed session
            # keeps the room and every link: media goes on over the same connections.)
            self._in_room = False
            await self._close_links()
        elif isinstance(event, FileState):
            self.files.handle(event)
        elif not isinstance(event, _ROOM_SCOPED) or event.room != room:
            return
        elif isinstance(event, RecordingState):
            await self._close_upstream()
            # `upstream: false`: the forwarding worker records what it already receives.
            if event.active and event.worker is not None and event.data.get("upstream", True):
                self._open_upstream(event.worker)
        elif isinstance(event, RoomModeChanged):
            await self._change_mode(event)
        elif isinstance(event, SignalReceived):
            if (self.forwarded is not None and event.pc is not None
                    and event.sender == self.forwarded.worker):
                self.forwarded.deliver(event)
            elif (self._upstream is not None and event.pc == "record"
                  and event.sender == self._upstream.remote):
                self._upstream.deliver(event)
            elif event.sender not in self._gone:
                self._link_for(event.sender).deliver(event)
        elif isinstance(event, ParticipantJoined):
            # It will offer to us (it is the joiner); we only note our role.
            self._roster.add(event.participant.id)
            self._later_joiners[event.participant.id] = event.polite
        elif (isinstance(event, ParticipantLeft) and self._joined is not None
              and event.id == self._joined.self_id):
            # The node removed us (an operator's kick, a closed room): our calls are over.
            log.info("removed from %s (%s)", self._joined.room, event.reason)
            self._in_room = False
            self.removed = event.reason
            await self._close_links()
        elif isinstance(event, ParticipantLeft):
            self._roster.discard(event.id)
            if self.forwarded is not None:
                await self.forwarded.publisher_left(event.id)
            self._gone.add(event.id)
            self._later_joiners.pop(event.id, None)
            link = self._links.get(event.id)
            if link is not None:
                # Dropped only once closed: if we are cancelled meanwhile, close() finds it.
                await link.close()
                self._links.pop(event.id, None)

    def _link_for(self, remote: ParticipantId) -> PeerLink:
        link = self._links.get(remote)
        if link is None:
            # A signal from someone we have no link to: a later joiner's first offer.
            # Being the earlier participant, we are the impolite side.
            link = self._open_link(remote, self._later_joiners.pop(remote, False))
        return link

    def _open_link(self, remote: ParticipantId, polite: bool) -> PeerLink:
        assert self._configuration is not None
        link = PeerLink(remote, polite=polite, configuration=self._configuration,
                        media=self._media, send=self._sender(remote),
                        on_data_channel=self._on_data_channel, send_loss=self._send_loss)
        self._links[remote] = link
        return link

    def _forward_through(self, worker: ParticipantId) -> None:
        assert self._configuration is not None
        self.forwarded = ForwardedMedia(
            worker, configuration=self._configuration, media=self._media,
            sender=lambda pc: self._sender(worker, pc), send_loss=self._send_loss)

    async def _change_mode(self, event: RoomModeChanged) -> None:
        """Switch between mesh links and forwarding, closing what the other mode used."""
        forwarded, self.forwarded = self.forwarded, None
        if forwarded is not None:
            await forwarded.close()
        if event.mode == "forward" and event.worker is not None:
            await self._close_mesh_links()
            self._forward_through(event.worker)
            return
        # Back to mesh (the worker is gone): the participant with the smaller id offers.
        # A link may exist already without a connection (a stray candidate from the
        # other side opened it): it still needs our offer.
        me = self.id
        for other in sorted(self._roster):
            link = self._links.get(other)
            if me < other:
                if link is None:
                    link = self._open_link(other, polite=False)
                if link.pc is None:
                    link.offer()
            elif link is None:
                self._later_joiners[other] = True

    def _open_upstream(self, worker: ParticipantId) -> None:
        assert self._configuration is not None
        self._upstream = PeerLink(worker, polite=False, configuration=self._configuration,
                                  media=self._media, send=self._sender(worker, "record"),
                                  send_loss=self._send_loss)
        self._upstream.offer()

    async def _close_upstream(self) -> None:
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            await upstream.close()

    @property
    def upstream(self) -> PeerLink | None:
        """The connection sending our media to the room's recording worker, if any."""
        return self._upstream

    def _on_data_channel(self, link: PeerLink, channel: RTCDataChannel) -> None:
        self.files.on_data_channel(link, channel)

    def _sender(self, remote: ParticipantId, pc: str | None = None) -> SendSignal:
        async def send(message: dict[str, Any]) -> None:
            room = self._require_joined().room
            try:
                await self._client.signal(room, remote, pc=pc, **message)
            except RequestError as exc:
                # Most likely the participant has just left; its link closes on that event.
                log.info("signal to %s refused: %s", remote, exc)

        return send

    async def _close_links(self) -> None:
        await self._close_upstream()
        forwarded, self.forwarded = self.forwarded, None
        if forwarded is not None:
            await forwarded.close()
        await self._close_mesh_links()

    async def _close_mesh_links(self) -> None:
        links = dict(self._links)
        await asyncio.gather(*(link.close() for link in links.values()))
        for remote in links:
            self._links.pop(remote, None)

    def _stop_listening(self) -> None:
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()

    def _require_joined(self) -> JoinedRoom:
        if self._joined is None:
            raise RuntimeError("the peer has not joined a room")
        return self._joined
