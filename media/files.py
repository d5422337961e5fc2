"""Peer-to-peer file transfer over RTCDataChannels, as docs/protocol.md "File transfers" says.

The node keeps each transfer's state (`file:*` requests, `file:state` events); the bytes go
over a data channel labelled `file:<id>` on the `PeerLink` between sender and receiver:

1. the sender offers (`file:offer`, with the SHA-256) and waits for the receiver's `accepted`;
2. it opens `file:<id>`; the receiver answers `{"type": "resume", "offset": N}`;
3. the sender streams binary chunks of at most 16 KiB from N, pausing while the channel's
   `bufferedAmount` is above 1 MiB, then sends `{"type": "end"}`;
4. the receiver reports `file:progress` (at most every 100 ms) and, after `end`, `file:done`
   with the SHA-256 of what it holds.

A channel that closes before the transfer is over is replaced by a new one (on the link's
current peer connection, once usable); the receiver's `resume` offset makes the sender go
on from there. Both sides report progress; the node never sees the bytes.

`FileTransfers` is owned by a `HeadlessPeer` (`peer.files`), which routes `file:state` events
and incoming data channels to it and closes it in `close()`.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import IO, Any, Final, Protocol

from aiortc import RTCDataChannel
from aiortc.exceptions import InvalidStateError

from signaling.client import FileState, RequestError, SignalingClient
from signaling.ids import ParticipantId, RoomId

from .link import PeerLink
from .taskutil import cancel_and_wait

log = logging.getLogger(__name__)

CHUNK_SIZE: Final = 16 * 1024
HIGH_WATER: Final = 1024 * 1024
PROGRESS_INTERVAL: Final = 0.1
LABEL_PREFIX: Final = "file:"
_TERMINAL: Final = frozenset({"done", "cancelled", "failed"})
_RECEIVER_GONE: Final = frozenset({"rejected", "failed", "cancelled"})
_RETRY_DELAY: Final = 0.2
_LINK_POLL: Final = 0.05

# Decides on an offered transfer (the FileState of its `offered` state): accept or not.
AcceptPolicy = Callable[[FileState], bool | Awaitable[bool]]


class FileTransferError(Exception):
    """A transfer ended other than `done` (rejected, cancelled, failed, a bad peer)."""


class _PeerView(Protocol):
    """What the transfers need of their HeadlessPeer."""

    @property
    def id(self) -> ParticipantId: ...

    @property
    def room(self) -> RoomId: ...

    @property
    def links(self) -> Mapping[ParticipantId, PeerLink]: ...


class _Progress:
    """Reports `file:progress` for one party, at most every PROGRESS_INTERVAL seconds."""

    def __init__(self, client: SignalingClient, file_id: str) -> None:
        self._client = client
        self._id = file_id
        self._value = 0
        self._reported = 0
        self._changed = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def update(self, value: int) -> None:
        if value <= self._value:
            return
        self._value = value
        self._changed.set()
        if self._task is None and not self._stopping:
            self._task = asyncio.create_task(self._run(), name=f"media-file-progress:{self._id}")

    async def flush(self) -> None:
        """Report the latest value (if not yet reported) and stop."""
        self._stopping = True
        self._changed.set()
        if self._task is not None:
            await asyncio.shield(self._task)
        elif self._value > self._reported:
            await self._report()

    async def close(self) -> None:
        self._stopping = True
        if self._task is not None:
            await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            if not self._stopping:
                await self._changed.wait()
            self._changed.clear()
            if self._value > self._reported:
                await self._report()
            if self._stopping and self._reported >= self._value:
                return
            if not self._stopping:
                await asyncio.sleep(PROGRESS_INTERVAL)

    async def _report(self) -> None:
        value = self._value
        try:
            await self._client.file_action("progress", self._id, bytes=value)
        except RequestError as exc:
            log.info("progress of %s not recorded: %s", self._id, exc)
        self._reported = value


class _Channel:
    """An RTCDataChannel's events as state a coroutine can wait on (through `wake`)."""

    def __init__(self, channel: RTCDataChannel, wake: Callable[[], None],
                 on_message: Callable[[str | bytes], None] | None = None) -> None:
        """Messages go to `on_message` if given, else to `messages`."""
        self.channel = channel
        self.messages: deque[str | bytes] = deque()
        self.closed = channel.readyState in ("closing", "closed")
        self._wake = wake
        channel.bufferedAmountLowThreshold = HIGH_WATER
        channel.on("message", on_message if on_message is not None else self._on_message)
        channel.on("close", self._on_close)
        channel.on("bufferedamountlow", wake)
        channel.on("open", wake)

    @property
    def buffered(self) -> int:
        return int(self.channel.bufferedAmount)

    def send(self, data: str | bytes) -> bool:
        """False when the channel is no longer open."""
        if self.closed:
            return False
        try:
            self.channel.send(data)
        except InvalidStateError:
            self._on_close()
            return False
        return True

    def close(self) -> None:
        self.closed = True
        self.channel.close()
        self._wake()

    def _on_message(self, message: str | bytes) -> None:
        self.messages.append(message)
        self._wake()

    def _on_close(self) -> None:
        self.closed = True
        self._wake()


class _Source:
    """The bytes to send: in memory or read from a file."""

    def __init__(self, source: bytes | bytearray | memoryview | str | Path) -> None:
        self._file: IO[bytes] | None = None
        if isinstance(source, (str, Path)):
            self.path: Path | None = Path(source)
            self._data = memoryview(b"")
            digest = hashlib.sha256()
            size = 0
            with self.path.open("rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
                    size += len(block)
            self.size, self.sha256 = size, digest.hexdigest()
        else:
            self.path = None
            self._data = memoryview(bytes(source))
            self.size, self.sha256 = len(self._data), hashlib.sha256(self._data).hexdigest()

    def read(self, offset: int, count: int) -> bytes:
        if self.path is None:
            return bytes(self._data[offset:offset + count])
        if self._file is None:
            self._file = self.path.open("rb")
        self._file.seek(offset)
        return self._file.read(count)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class OutgoingFile:
    """A file this peer sends to one participant. `await wait()` for the outcome."""

    def __init__(self, transfers: FileTransfers, file_id: str, to: ParticipantId,
                 source: _Source, name: str, mime: str) -> None:
        self.id = file_id
        self.to = to
        self.name = name
        self.mime = mime
        self.size = source.size
        self.sha256 = source.sha256
        # The latest file:state payload.
        self.transfer: dict[str, Any] = {}
        # One (offset, bytes sent) per data channel used: more than one after a resume.
        self.rounds: list[tuple[int, int]] = []
        self._transfers = transfers
        self._source = source
        self._progress = _Progress(transfers.client, file_id)
        self._changed = asyncio.Event()
        self._channel: _Channel | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def state(self) -> str:
        return str(self.transfer.get("state", "new"))

    @property
    def receiver_state(self) -> str:
        receivers = self.transfer.get("receivers") or {}
        return str(receivers.get(self.to, {}).get("state", "offered"))

    @property
    def sent(self) -> int:
        """Bytes handed to data channels, over all rounds."""
        return sum(n for _, n in self.rounds)

    def interrupt(self) -> None:
        """Close the current data channel (as a lost connection would); a new one resumes."""
        if self._channel is not None:
            self._channel.close()

    async def wait(self) -> dict[str, Any]:
        """The final file:state payload; FileTransferError unless the transfer is done."""
        assert self.task is not None
        await asyncio.shield(self.task)
        if self.state != "done":
            raise FileTransferError(f"transfer {self.id} ended {self.state}: "
                                    f"{self.transfer.get('reason')}")
        return self.transfer

    def _on_state(self, data: dict[str, Any]) -> None:
        self.transfer = data
        self._changed.set()

    @property
    def _over(self) -> bool:
        return self.state in _TERMINAL or self.receiver_state in _RECEIVER_GONE

    async def _until(self, check: Callable[[], bool]) -> None:
        while True:
            self._changed.clear()
            if check():
                return
            await self._changed.wait()

    async def _run(self) -> None:
        client = self._transfers.client
        try:
            offered = await client.offer_file(self._transfers.room, self.id, self.name, self.size,
                                              mime=self.mime, to=self.to, sha256=self.sha256)
            if not self.transfer:
                self._on_state(offered)
            await self._until(lambda: self._over or self.receiver_state in (
                "accepted", "transferring", "done"))
            while not self._over:
                link = await self._usable_link()
                if link is None:
                    break
                channel = _Channel(link.create_data_channel(LABEL_PREFIX + self.id),
                                   self._changed.set)
                self._channel = channel
                try:
                    await self._stream(channel)
                finally:
                    if self._over or not channel.closed:
                        channel.close()
                    self._channel = None
                if not self._over:
                    log.info("channel for %s closed early; reopening", self.id)
                    await asyncio.sleep(_RETRY_DELAY)
        except Exception as exc:
            log.warning("sending %s failed: %r", self.id, exc)
            if self.state not in _TERMINAL:
                try:
                    await client.file_action("cancel", self.id, reason="sender error")
                except RequestError:
                    pass
        finally:
            self._source.close()
            await self._progress.close()

    async def _usable_link(self) -> PeerLink | None:
        while not self._over:
            link = self._transfers.peer.links.get(self.to)
            if link is not None and link.usable:
                return link
            if link is not None and link.connection_state == "connected" and not link.closed:
                # Connected without SCTP: the offer had no application m-line, and aiortc
                # cannot renegotiate one in. Only the HTTP relay could carry this file.
                raise FileTransferError(f"no data channels on the connection to {self.to}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), _LINK_POLL)
            except TimeoutError:
                pass
        return None

    async def _stream(self, channel: _Channel) -> None:
        """Serve one channel until the transfer is over or the channel closes."""
        await self._until(lambda: bool(channel.messages) or channel.closed or self._over)
        if not channel.messages:
            return
        message = channel.messages.popleft()
        offset = _resume_offset(message)
        if offset is None or not 0 <= offset <= self.size:
            raise FileTransferError(f"bad resume message for {self.id}: {message!r}")
        self.rounds.append((offset, 0))
        position = offset
        while position < self.size:
            if self._over or channel.closed:
                return
            if channel.buffered > HIGH_WATER:
                await self._until(lambda: channel.buffered <= HIGH_WATER or channel.closed
                                  or self._over)
                continue
            data = self._source.read(position, CHUNK_SIZE)
            if not data:
                raise FileTransferError(f"{self.id}: the source ended at {position}")
            if not channel.send(data):
                return
            position += len(data)
            start, count = self.rounds[-1]
            self.rounds[-1] = (start, count + len(data))
            self._progress.update(position)
        if channel.send(json.dumps({"type": "end"})):
            await self._until(lambda: channel.closed or self._over)


def _resume_offset(message: str | bytes) -> int | None:
    if not isinstance(message, str):
        return None
    try:
        parsed = json.loads(message)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or parsed.get("type") != "resume":
        return None
    offset = parsed.get("offset")
    return offset if isinstance(offset, int) and not isinstance(offset, bool) else None


class IncomingFile:
    """A file this peer accepted. `await wait()` until it is done (or failed)."""

    def __init__(self, transfers: FileTransfers, event: FileState,
                 directory: Path | None) -> None:
        data = event.data
        self.id = event.id
        self.sender = ParticipantId(str(data["from"]))
        self.name = str(data["name"])
        self.size = int(data["size"])
        self.offered_sha256: str | None = data.get("sha256")
        self.sha256: str | None = None  # of what we hold, once complete
        self.transfer: dict[str, Any] = data
        self.received = 0
        self.path = directory / f"{self.id}_{self.name}" if directory is not None else None
        self._buffer = bytearray()
        self._file: IO[bytes] | None = self.path.open("wb") if self.path is not None else None
        self._digest = hashlib.sha256()
        self._transfers = transfers
        self._progress = _Progress(transfers.client, self.id)
        self._channel: _Channel | None = None
        self._finishing = False
        self._finished = asyncio.Event()
        self.error: str | None = None

    @property
    def state(self) -> str:
        receivers = self.transfer.get("receivers") or {}
        me = receivers.get(self._transfers.peer.id, {})
        return str(me.get("state", self.transfer.get("state", "accepted")))

    @property
    def data(self) -> bytes:
        """The bytes received (in memory, or read back from `path`)."""
        if self.path is not None:
            return self.path.read_bytes()
        return bytes(self._buffer)

    async def wait(self) -> IncomingFile:
        await self._finished.wait()
        if self.error is not None:
            raise FileTransferError(f"receiving {self.id} failed: {self.error}")
        return self

    def _on_state(self, data: dict[str, Any]) -> None:
        self.transfer = data
        if data.get("state") in ("cancelled", "failed") and not self._finished.is_set():
            self.error = str(data.get("reason") or data.get("state"))
            self._stop()

    def _attach(self, channel: RTCDataChannel) -> None:
        if self._channel is not None:
            self._channel.close()
        wrapper = _Channel(channel, lambda: None,
                           on_message=lambda message: self._on_message(wrapper, message))
        self._channel = wrapper
        wrapper.send(json.dumps({"type": "resume", "offset": self.received}))

    def _on_message(self, channel: _Channel, message: str | bytes) -> None:
        if channel is not self._channel or self._finishing:
            return
        if isinstance(message, bytes):
            if self.received + len(message) > self.size:
                self._fail("more bytes than offered")
                return
            if self._file is not None:
                self._file.write(message)
            else:
                self._buffer += message
            self._digest.update(message)
            self.received += len(message)
            self._progress.update(self.received)
        elif isinstance(message, str):
            try:
                kind = json.loads(message).get("type")
            except (ValueError, AttributeError):
                kind = None
            if kind == "end":
                if self.received != self.size:
                    self._fail(f"ended at {self.received} of {self.size} bytes")
                else:
                    self._finishing = True
                    self._transfers.spawn(self._finish(), f"media-file-done:{self.id}")

    async def _finish(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.sha256 = self._digest.hexdigest()
        await self._progress.flush()
        try:
            ack = await self._transfers.client.file_action("done", self.id, sha256=self.sha256)
            self._on_state(dict(ack.get("transfer") or self.transfer))
            if self.state == "failed":
                self.error = str(self.transfer.get("reason") or "failed")
        except RequestError as exc:
            self.error = str(exc)
        self._finished.set()

    def _fail(self, reason: str) -> None:
        self._finishing = True
        self.error = reason
        self._transfers.spawn(self._cancel(reason), f"media-file-cancel:{self.id}")

    async def _cancel(self, reason: str) -> None:
        try:
            await self._transfers.client.file_action("cancel", self.id, reason=reason)
        except RequestError as exc:
            log.info("cancelling %s: %s", self.id, exc)
        self._stop()

    def _stop(self) -> None:
        self._finishing = True
        if self._channel is not None:
            self._channel.close()
        if self._file is not None:
            self._file.close()
            self._file = None
        self._finished.set()

    async def _close(self) -> None:
        await self._progress.close()
        if not self._finished.is_set():
            self.error = self.error or "closed"
            self._stop()


class FileTransfers:
    """Every transfer of one HeadlessPeer: files it sends, and offers it accepts.

    `accept` decides on offers made to this peer (True: every one; a callable gets the
    `offered` FileState; None/False: ignore them, leaving them to another client of the
    same participant). Accepted files are kept in memory, or written to `directory`.
    """

    def __init__(self, client: SignalingClient, peer: _PeerView, *,
                 accept: bool | AcceptPolicy | None = None,
                 directory: Path | None = None) -> None:
        self.client = client
        self.peer = peer
        self._accept = accept
        self._directory = directory
        self.outgoing: dict[str, OutgoingFile] = {}
        self.incoming: dict[str, IncomingFile] = {}
        self._seen: set[str] = set()  # offers decided on (or being decided)
        self._tasks: set[asyncio.Task[None]] = set()
        self._incoming_changed = asyncio.Event()
        self._closed = False

    @property
    def room(self) -> RoomId:
        return self.peer.room

    def send(self, to: str, source: bytes | bytearray | memoryview | str | Path, *,
             name: str, mime: str = "application/octet-stream",
             file_id: str | None = None) -> OutgoingFile:
        """Offer `source` (bytes or a file path) to participant `to` and send it once
        accepted, in a task of its own. `await result.wait()` for the outcome."""
        if self._closed:
            raise RuntimeError("the peer is closed")
        file_id = file_id or "f" + secrets.token_hex(8)
        if file_id in self.outgoing:
            raise ValueError(f"transfer id in use: {file_id}")
        outgoing = OutgoingFile(self, file_id, ParticipantId(to), _Source(source), name, mime)
        self.outgoing[file_id] = outgoing
        outgoing.task = self.spawn(outgoing._run(), f"media-file-send:{file_id}")
        return outgoing

    async def wait_incoming(self, file_id: str | None = None,
                            timeout: float = 10.0) -> IncomingFile:  # noqa: ASYNC109
        """The accepted transfer `file_id` (default: the first one), once accepted."""
        async with asyncio.timeout(timeout):
            while True:
                self._incoming_changed.clear()
                if file_id is not None and file_id in self.incoming:
                    return self.incoming[file_id]
                if file_id is None and self.incoming:
                    return next(iter(self.incoming.values()))
                await self._incoming_changed.wait()

    # -- from the HeadlessPeer --------------------------------------------------------

    def handle(self, event: FileState) -> None:
        """A file:state event of the client."""
        if self._closed:
            return
        outgoing = self.outgoing.get(event.id)
        if outgoing is not None:
            outgoing._on_state(event.data)
            return
        incoming = self.incoming.get(event.id)
        if incoming is not None:
            incoming._on_state(event.data)
            return
        me = self.peer.id
        receivers = event.data.get("receivers") or {}
        if (event.state == "offered" and event.room == self.room
                and me in (event.data.get("to") or [])
                and (receivers.get(me) or {}).get("state") == "offered"
                and event.id not in self._seen and self._accept not in (None, False)):
            self._seen.add(event.id)
            self.spawn(self._decide(event), f"media-file-offer:{event.id}")

    def on_data_channel(self, link: PeerLink, channel: RTCDataChannel) -> None:
        label = str(channel.label)
        if not label.startswith(LABEL_PREFIX):
            return  # the control channel, or someone else's
        incoming = self.incoming.get(label[len(LABEL_PREFIX):])
        if incoming is None or incoming.sender != link.remote or self._closed:
            log.info("closing data channel %r from %s: no such transfer", label, link.remote)
            channel.close()
            return
        incoming._attach(channel)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Stop every transfer (without cancelling them on the node) and every task."""
        self._closed = True
        for task in list(self._tasks):
            await cancel_and_wait(task)
        for outgoing in self.outgoing.values():
            outgoing.interrupt()
            outgoing._source.close()
            await outgoing._progress.close()
        for incoming in self.incoming.values():
            await incoming._close()

    async def _decide(self, event: FileState) -> None:
        policy = self._accept
        verdict: bool
        try:
            if callable(policy):
                outcome = policy(event)
                verdict = bool(await outcome) if inspect.isawaitable(outcome) else bool(outcome)
            else:
                verdict = bool(policy)
        except Exception:
            log.exception("deciding on file %s failed; rejecting it", event.id)
            verdict = False
        if not verdict:
            try:
                await self.client.file_action("reject", event.id)
            except RequestError as exc:
                log.info("rejecting %s: %s", event.id, exc)
            return
        # Ready before the node hears of it: the sender opens the channel on `accepted`.
        self.incoming[event.id] = IncomingFile(self, event, self._directory)
        self._incoming_changed.set()
        try:
            await self.client.file_action("accept", event.id)
        except RequestError as exc:
            log.info("accepting %s: %s", event.id, exc)
            incoming = self.incoming.pop(event.id)
            await incoming._close()
