"""Real headless Chromium through the demo: session resume, ICE restart, calls ringing on every tab,
token refresh."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.async_api import Browser, Page, Route

from signaling.app import EDGE

from .browser import chromium, open_demo, wait_decoding
from .conftest import Node, NodeFactory

pytestmark = pytest.mark.browser

# ---- helpers (page-side state through window.mikotoDemo) ------------------------------

UFRAG_JS = """
([id, which]) => {
  const pc = window.mikotoDemo.peers()[id];
  const desc = pc && (which === 'local' ? pc.localDescription : pc.remoteDescription);
  const m = desc && /a=ice-ufrag:(\\S+)/.exec(desc.sdp);
  return m ? m[1] : null;
}
"""

# Remembers every value a tile's data-connection takes (the resume is too quick to poll).
WATCH_PRESENCE_JS = """
(id) => {
  window.__presence = window.__presence || {};
  const seen = (window.__presence[id] = []);
  const tile = document.querySelector(`.tile[data-participant-id='${id}']`);
  seen.push(tile.dataset.connection);
  new MutationObserver(() => seen.push(tile.dataset.connection))
    .observe(tile, {attributes: true, attributeFilter: ['data-connection']});
}
"""


async def open_page(browser: Browser, base_url: str, **params: Any) -> Page:
    """Open the demo without joining a room; wait for the signaling connection."""
    context = await browser.new_context(permissions=["camera", "microphone"])
    page = await context.new_page()
    page.on("console", lambda msg: _console(page, msg.type, msg.text))
    await page.goto(f"{base_url}/?{urlencode(params)}")
    await page.wait_for_selector("#socket-status[data-state=connected]", timeout=20_000)
    return page


def _console(page: Page, kind: str, text: str) -> None:
    if kind in ("error", "warning"):
        print(f"[{page.url[-40:]}] console.{kind}: {text}")


async def self_id(page: Page) -> str:
    value: str = await page.evaluate("() => window.mikotoDemo.selfId")
    return value


async def events(page: Page, kind: str) -> list[Any]:
    found: list[Any] = await page.evaluate(
        "(kind) => window.mikotoDemo.events.filter(e => e.type === kind).map(e => e.detail)", kind)
    return found


async def frames_from(page: Page, participant: str) -> int:
    stats = await page.evaluate("() => window.mikotoDemo.stats()")
    return int(stats.get(participant, {}).get("video", {}).get("framesDecoded", 0))


async def wait_frames_above(page: Page, participant: str, floor: int, by: int = 15,
                            timeout: float = 20.0) -> int:
    """Wait until `page` decoded at least `by` more frames from `participant` than `floor`."""
    frames = floor
    try:
        async with asyncio.timeout(timeout):
            while frames < floor + by:
                await asyncio.sleep(0.25)
                frames = await frames_from(page, participant)
    except TimeoutError:
        raise AssertionError(
            f"video from {participant} stalled at {frames} frames (was {floor})") from None
    return frames


async def ufrag(page: Page, participant: str, which: str = "local") -> str | None:
    value: str | None = await page.evaluate(UFRAG_JS, [participant, which])
    return value


async def wait_ufrag_change(page: Page, participant: str, old: str | None, which: str = "local",
                            timeout: float = 15.0) -> str:
    async with asyncio.timeout(timeout):
        while True:
            now = await ufrag(page, participant, which)
            if now is not None and now != old:
                return now
            await asyncio.sleep(0.1)


async def pair(browser: Browser, node: Node, room: str) -> tuple[Page, Page, str, str]:
    """Two demo pages in `room`, decoding each other's video."""
    ann = await open_demo(browser, node.url, room=room, name="Ann")
    bob = await open_demo(browser, node.url, room=room, name="Bob")
    await wait_decoding(ann)
    await wait_decoding(bob)
    return ann, bob, await self_id(ann), await self_id(bob)


# ---- (a) resume after a lost transport ------------------------------------------------


async def test_dropped_transport_resumes_while_media_keeps_flowing(node: Node) -> None:
    async with chromium() as browser:
        ann, bob, ann_id, bob_id = await pair(browser, node, "resume")
        session = await ann.evaluate("() => window.mikotoDemo.sessionId")
        assert session
        await ann.evaluate("(id) => { window.__pc = window.mikotoDemo.peers()[id]; }", bob_id)
        await bob.evaluate(WATCH_PRESENCE_JS, ann_id)
        ann_frames = await frames_from(ann, bob_id)
        bob_frames = await frames_from(bob, ann_id)

        await ann.evaluate("() => window.mikotoDemo.dropTransport()")
        await ann.wait_for_function(
            "() => window.mikotoDemo.events.some(e => e.type === 'socket'"
            " && e.detail.state === 'reconnecting')", timeout=5_000)
        await ann.wait_for_selector("#socket-status[data-state=connected]", timeout=15_000)

        # the same session, the same participant, the same peer connection
        assert await ann.evaluate("() => window.mikotoDemo.sessionId") == session
        assert await self_id(ann) == ann_id
        assert await ann.evaluate("(id) => window.mikotoDemo.peers()[id] === window.__pc", bob_id)
        [resumed] = [e for e in await events(ann, "socket") if e["state"] == "connected"][-1:]
        assert resumed["resumed"] is True
        assert await ann.evaluate("() => window.mikotoDemo.room.state") == "joined"

        # Bob saw Ann reconnect, never leave
        await bob.wait_for_function(
            "(id) => (window.__presence[id] || []).includes('reconnecting')"
            " && document.querySelector(`.tile[data-participant-id='${id}']`)"
            ".dataset.connection === 'connected'", arg=ann_id, timeout=10_000)
        presence = [e["connection"] for e in await events(bob, "participant:updated")
                    if e["id"] == ann_id]
        assert "reconnecting" in presence
        assert presence[presence.index("reconnecting"):][-1] == "connected"
        assert not [e for e in await events(bob, "participant:left") if e["id"] == ann_id]
        assert [p["id"] for p in await bob.evaluate("() => window.mikotoDemo.participants()")] \
            == [ann_id]

        # media kept flowing both ways
        await wait_frames_above(ann, bob_id, ann_frames)
        await wait_frames_above(bob, ann_id, bob_frames)


async def test_requests_made_offline_are_sent_after_the_resume(node: Node) -> None:
    async with chromium() as browser:
        ann, bob, ann_id, _ = await pair(browser, node, "offline")
        tile = f".tile[data-participant-id='{ann_id}']"
        await bob.evaluate(WATCH_PRESENCE_JS, ann_id)
        # no new connection can be made while the context is offline
        await ann.context.set_offline(True)
        await ann.evaluate("() => window.mikotoDemo.dropTransport()")
        await ann.wait_for_selector("#socket-status[data-state=reconnecting]", timeout=5_000)
        await bob.wait_for_selector(f"{tile}[data-connection=reconnecting]", timeout=10_000)
        # made while offline: queued, not failed
        hand = asyncio.ensure_future(
            ann.evaluate("() => window.mikotoDemo.room.updateState({hand: true})"))
        await asyncio.sleep(1.0)
        assert not hand.done()
        assert await ann.evaluate("() => window.mikotoDemo.client.pendingRequests") >= 1
        await ann.context.set_offline(False)
        await hand
        await ann.wait_for_selector("#socket-status[data-state=connected]", timeout=15_000)
        await bob.wait_for_selector(f"{tile}[data-hand=true][data-connection=connected]",
                                    timeout=10_000)
        assert await self_id(ann) == ann_id
        assert not [e for e in await events(bob, "participant:left") if e["id"] == ann_id]


async def test_request_whose_ack_was_lost_is_acted_on_once(node: Node) -> None:
    async with chromium() as browser:
        ann, bob, ann_id, _ = await pair(browser, node, "once")
        tile = f".tile[data-participant-id='{ann_id}']"
        bob_seq = await bob.evaluate("() => window.mikotoDemo.room.seq")
        # sent, then the transport goes before the ack can come back: resent with the same cid
        await ann.evaluate("""async () => {
          const demo = window.mikotoDemo;
          const update = demo.room.updateState({hand: true});
          demo.dropTransport();
          window.__inFlight = demo.client.pendingRequests;
          await update;
        }""")
        assert await ann.evaluate("() => window.__inFlight") == 1
        await bob.wait_for_selector(f"{tile}[data-hand=true][data-connection=connected]",
                                    timeout=10_000)
        # update + reconnecting + connected: three room events, the update acted on once
        await asyncio.sleep(0.5)
        assert await bob.evaluate("() => window.mikotoDemo.room.seq") == bob_seq + 3
        assert await ann.evaluate("() => window.mikotoDemo.room.seq") == bob_seq + 3
        hands = [e for e in await events(bob, "participant:updated")
                 if e["id"] == ann_id and e["state"]["hand"]]
        assert [e["connection"] for e in hands] in (
            ["connected", "reconnecting", "connected"], ["reconnecting", "connected"])


async def test_refused_resume_rejoins_as_a_new_participant(make_node: NodeFactory) -> None:
    node = await make_node(resume_grace=1.0)
    async with chromium() as browser:
        ann, bob, ann_id, bob_id = await pair(browser, node, "expired")
        session = await ann.evaluate("() => window.mikotoDemo.sessionId")
        await ann.context.set_offline(True)
        await ann.evaluate("() => window.mikotoDemo.dropTransport()")
        # the grace period runs out: Bob sees Ann time out
        await bob.wait_for_function(
            "(id) => window.mikotoDemo.events.some(e => e.type === 'participant:left'"
            " && e.detail.id === id && e.detail.reason === 'timeout')", arg=ann_id, timeout=15_000)
        await ann.context.set_offline(False)
        # not_found on resume -> a new session, the room joined again as a new participant
        await ann.wait_for_function(
            "(old) => window.mikotoDemo.selfId && window.mikotoDemo.selfId !== old"
            " && window.mikotoDemo.room.state === 'joined'", arg=ann_id, timeout=20_000)
        assert await ann.evaluate("() => window.mikotoDemo.sessionId") != session
        lost = await events(ann, "session:lost")
        assert lost and lost[-1]["code"] == "not_found"
        new_id = await self_id(ann)
        await wait_decoding(bob, peers=1)
        stats = await wait_decoding(ann, peers=1)
        assert set(stats) == {bob_id}
        assert [p["id"] for p in await bob.evaluate("() => window.mikotoDemo.participants()")] \
            == [new_id]


async def test_draining_node_the_page_keeps_media_and_retries(make_node: NodeFactory) -> None:
    node = await make_node(drain_timeout=1.0)
    async with chromium() as browser:
        ann, _bob, ann_id, bob_id = await pair(browser, node, "draining")
        ann_frames = await frames_from(ann, bob_id)
        drain = asyncio.ensure_future(node.server.app[EDGE].drain())
        await ann.wait_for_function(
            "() => window.mikotoDemo.events.some(e => e.type === 'server:draining'"
            " && e.detail.reconnectIn === 1000)", timeout=5_000)
        await drain
        # closed by the node, refused while it drains (`unavailable`): the page keeps trying
        await ann.wait_for_selector("#socket-status[data-state=reconnecting]", timeout=5_000)
        await ann.wait_for_function(
            "() => window.mikotoDemo.client.lastError"
            " && window.mikotoDemo.client.lastError.code === 'unavailable'", timeout=10_000)
        assert await ann.evaluate("() => window.mikotoDemo.room.state") == "joined"
        assert await self_id(ann) == ann_id
        # the media path does not go through the node
        await wait_frames_above(ann, bob_id, ann_frames)


# ---- (b) ICE restart -------------------------------------------------------------------


async def test_ice_restart_renegotiates_through_the_node(node: Node) -> None:
    async with chromium() as browser:
        ann, bob, ann_id, bob_id = await pair(browser, node, "restart")

        # Ann restarts: a new offer with new credentials goes through the node
        ann_old = await ufrag(ann, bob_id)
        bob_old = await ufrag(bob, ann_id)
        bob_frames = await frames_from(bob, ann_id)
        await ann.evaluate("(id) => window.mikotoDemo.restartIce(id)", bob_id)
        ann_new = await wait_ufrag_change(ann, bob_id, ann_old)
        assert await wait_ufrag_change(bob, ann_id, ann_old, which="remote") == ann_new
        assert await wait_ufrag_change(bob, ann_id, bob_old) != bob_old  # Bob answered fresh
        await ann.wait_for_function(
            "(id) => { const pc = window.mikotoDemo.peers()[id]; return pc.signalingState"
            " === 'stable' && ['connected', 'completed'].includes(pc.iceConnectionState); }",
            arg=bob_id, timeout=15_000)
        await wait_frames_above(bob, ann_id, bob_frames)
        await wait_frames_above(ann, bob_id, await frames_from(ann, bob_id))
        restarts = await events(ann, "peer:icerestart")
        assert restarts and restarts[-1] == {
            "participantId": bob_id, "origin": "local", "reason": "requested"}

        # Ann asks Bob to restart (signal {restart: true}): Bob offers with new credentials
        bob_old = await ufrag(bob, ann_id)
        ann_frames = await frames_from(ann, bob_id)
        await ann.evaluate(
            "(id) => window.mikotoDemo.client.request('signal',"
            " {room: window.mikotoDemo.room.name, to: id, restart: true})", bob_id)
        bob_new = await wait_ufrag_change(bob, ann_id, bob_old)
        assert await wait_ufrag_change(ann, bob_id, bob_old, which="remote") == bob_new
        assert [e["origin"] for e in await events(bob, "peer:icerestart")][-1] == "remote"
        await wait_frames_above(ann, bob_id, ann_frames)


# ---- (c) calls ----------------------------------------------------------------------


async def test_call_rings_on_every_tab_of_the_callee(node: Node) -> None:
    caller = f"a-{secrets.token_hex(3)}"
    callee = f"b-{secrets.token_hex(3)}"
    async with chromium() as browser:
        a = await open_page(browser, node.url, user=caller, name="Alice")
        b1 = await open_page(browser, node.url, user=callee, name="Bob")
        b2 = await open_page(browser, node.url, user=callee, name="Bob")
        for page, user in ((a, caller), (b1, callee), (b2, callee)):
            assert await page.evaluate("() => window.mikotoDemo.userId") == user
            assert await page.evaluate("() => window.mikotoDemo.connectionState") == "connected"
        await a.wait_for_selector("#rtt[data-rtt]", timeout=10_000)

        await a.fill("#call-user-input", callee)
        await a.click("#call-button")
        for page in (b1, b2):
            await page.wait_for_selector("#incoming-call.ringing[data-call-id]", state="visible",
                                         timeout=10_000)
        call_ids = {await p.get_attribute("#incoming-call", "data-call-id") for p in (b1, b2)}
        assert len(call_ids) == 1
        [call_id] = call_ids
        assert "Alice" in await b1.inner_text("#incoming-call")
        await a.wait_for_selector(f"#call-state[data-state=ringing][data-call-id='{call_id}']")
        assert await b2.get_attribute("#call-state", "data-state") == "ringing"

        await b1.click("#accept-call")
        await b2.wait_for_selector("#call-state[data-state=answered_elsewhere]", timeout=10_000)
        await b2.wait_for_selector("#incoming-call", state="hidden")
        calls = await b2.evaluate("() => window.mikotoDemo.calls")
        assert calls[call_id]["state"] == "answered_elsewhere"
        await a.wait_for_selector("#call-state[data-state=accepted]", timeout=10_000)
        assert (await a.evaluate("() => window.mikotoDemo.calls"))[call_id]["state"] == "accepted"
        await b1.wait_for_selector("#incoming-call", state="hidden")

        # both parties join the call's room; the other tab of the callee stays out of it
        a_stats = await wait_decoding(a)
        b1_stats = await wait_decoding(b1)
        a_id, b1_id = await self_id(a), await self_id(b1)
        assert set(a_stats) == {b1_id} and set(b1_stats) == {a_id}
        room = await a.evaluate("() => window.mikotoDemo.room.name")
        assert room == await b1.evaluate("() => window.mikotoDemo.room.name")
        assert await b2.evaluate("() => window.mikotoDemo.room") is None

        # hang up: both leave the room
        await a.click("#hangup-button")
        for page in (a, b1):
            await page.wait_for_selector("#call-state[data-state=ended]", timeout=10_000)
            await page.wait_for_selector("#status[data-state=left]", timeout=10_000)
        assert await b1.evaluate("() => window.mikotoDemo.room") is None


async def test_declined_call_stops_ringing_everywhere(node: Node) -> None:
    caller = f"a-{secrets.token_hex(3)}"
    callee = f"b-{secrets.token_hex(3)}"
    async with chromium() as browser:
        a = await open_page(browser, node.url, user=caller, name="Alice", media=0)
        b1 = await open_page(browser, node.url, user=callee, name="Bob", media=0)
        b2 = await open_page(browser, node.url, user=callee, name="Bob", media=0)
        await a.fill("#call-user-input", callee)
        await a.click("#call-button")
        for page in (b1, b2):
            await page.wait_for_selector("#incoming-call[data-call-id]", state="visible",
                                         timeout=10_000)
        await b2.click("#decline-call")
        for page in (a, b1, b2):
            await page.wait_for_selector("#call-state[data-state=declined]", timeout=10_000)
        await b1.wait_for_selector("#incoming-call", state="hidden")
        assert await a.evaluate("() => window.mikotoDemo.room") is None


@pytest.mark.parametrize("answer_on", ["chromium", "python"])
async def test_call_rings_on_mixed_devices_and_stops_where_not_answered(
    node: Node, answer_on: str
) -> None:
    from signaling.client import CallIncoming, CallStateChanged

    from .helpers import EventLog

    sdk_devices = [await node.client("bob") for _ in range(2)]
    logs = [EventLog(c) for c in sdk_devices]
    ann = await node.client("ann")
    async with chromium() as browser:
        page = await open_page(browser, node.url, user="bob", name="Bob", media=0)
        call_id = (await ann.invite("bob", video=False))["callId"]
        for log in logs:
            assert (await log.wait_for(CallIncoming)).call_id == call_id
        await page.wait_for_selector(f"#incoming-call.ringing[data-call-id='{call_id}']",
                                     state="visible", timeout=10_000)
        if answer_on == "chromium":
            await page.click("#accept-call")
            for log in logs:
                await log.wait_for(CallStateChanged, lambda e: e.state == "answered_elsewhere")
        else:
            await sdk_devices[0].call_action("accept", call_id)
            await logs[1].wait_for(CallStateChanged, lambda e: e.state == "answered_elsewhere")
            await page.wait_for_selector("#call-state[data-state=answered_elsewhere]",
                                         timeout=10_000)
            await page.wait_for_selector("#incoming-call", state="hidden")


# ---- (d) token refresh ----------------------------------------------------------------

# Dev tokens live 2-3 s (`exp` is whole seconds); `auth:expiring` comes 2 s before.
SHORT_TOKENS: dict[str, Any] = {"token_ttl": 3, "auth_expiry_notice": 2.0}


def audited(path: Path, event: str) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [line for line in map(json.loads, lines) if line["event"] == event]


async def test_page_refreshes_its_token_and_keeps_its_connection(
        make_node: NodeFactory, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    node = await make_node(audit_log=str(audit), **SHORT_TOKENS)
    async with chromium() as browser:
        page = await open_page(browser, node.url, media=0)
        session = await page.evaluate("() => window.mikotoDemo.sessionId")
        [connection] = node.server.app[EDGE].sessions.connections()

        await asyncio.sleep(10)  # at least three tokens' lifetimes

        assert len(await events(page, "auth:expiring")) >= 3
        assert await events(page, "auth:expired") == []
        assert audited(audit, "token_expired") == []
        # the same transport all along: never reconnecting, never a second connect
        assert [e["state"] for e in await events(page, "socket")] == ["connecting", "connected"]
        assert node.server.app[EDGE].sessions.connections() == [connection]
        assert await page.evaluate("() => window.mikotoDemo.sessionId") == session
        assert await page.evaluate("() => window.mikotoDemo.ping()") >= 0


async def test_page_whose_token_backend_fails_resumes_once_it_is_back(
        make_node: NodeFactory, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    node = await make_node(audit_log=str(audit), **SHORT_TOKENS)
    async with chromium() as browser:
        page = await open_page(browser, node.url, media=0)
        session = await page.evaluate("() => window.mikotoDemo.sessionId")
        refused: list[str] = []

        async def refuse_twice(route: Route) -> None:
            # The token backend is down for the refresh and for the first reconnect:
            # the client keeps its session and retries until a token comes.
            if len(refused) >= 2:
                await route.continue_()
                return
            refused.append(route.request.url)
            await route.fulfill(status=503, body="down")

        await page.route("**/api/dev/token", refuse_twice)
        await page.wait_for_function(
            "() => window.mikotoDemo.events.some(e => e.type === 'auth:expired')",
            timeout=10_000)
        await page.wait_for_function(
            "() => window.mikotoDemo.events.some(e => e.type === 'socket'"
            " && e.detail.state === 'connected' && e.detail.resumed)", timeout=15_000)

        assert len(refused) == 2
        states = [e["state"] for e in await events(page, "socket")]
        assert states[:3] == ["connecting", "connected", "reconnecting"]
        assert states[-1] == "connected" and "disconnected" not in states
        assert await page.evaluate("() => window.mikotoDemo.sessionId") == session
        assert len(audited(audit, "token_expired")) == 1
        assert await page.evaluate("() => window.mikotoDemo.ping()") >= 0


async def test_page_with_a_fixed_token_is_disconnected_at_its_expiry(
        make_node: NodeFactory, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    node = await make_node(audit_log=str(audit), **SHORT_TOKENS)
    async with chromium() as browser:
        page = await open_page(browser, node.url, token=node.token("ann", ttl=3), media=0)
        await page.wait_for_function(
            "() => window.mikotoDemo.connectionState === 'disconnected'", timeout=10_000)

        assert len(await events(page, "auth:expiring")) == 1
        assert len(await events(page, "auth:expired")) == 1
        assert len(audited(audit, "token_expired")) == 1
        # the resume with the expired token is refused: final, no retries
        down = (await events(page, "socket"))[-1]
        assert down["state"] == "disconnected" and down["error"]["code"] == "unauthorized"
