"""Eager task start (signaling/eager.py) on a real loopback TCP connection, on asyncio's
loop and on uvloop (what `mikoto-rtc serve` runs): a handler started from a protocol's
`data_received` runs there until it first waits, as its own Task, and goes on in it."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvloop

from signaling import eager

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
VAR: contextvars.ContextVar[str] = contextvars.ContextVar("eager_test", default="unset")

Handler = Callable[[bytes, list[Any]], Coroutine[Any, Any, Any]]


class _Starter(asyncio.Protocol):
    """Starts `handler` eagerly for every read; notes what `start` returned."""

    def __init__(self, handler: Handler, log: list[Any], tasks: list[Any],
                 transports: list[asyncio.BaseTransport]) -> None:
        self.handler, self.log, self.tasks = handler, log, tasks
        self.transports = transports

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transports.append(transport)

    def data_received(self, data: bytes) -> None:
        self.log.append("received")
        loop = asyncio.get_running_loop()
        self.tasks.append(eager.start(loop, self.handler(data, self.log), name="c:test"))
        self.log.append("returned")


def _run(kind: str, handler: Handler, then: Callable[[list[Any], list[Any]], Awaitable[None]]
         ) -> None:
    """Send one chunk to a protocol on a loopback port; `then` checks the log and tasks."""
    async def main() -> None:
        log: list[Any] = []
        tasks: list[Any] = []
        transports: list[asyncio.BaseTransport] = []
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Starter(handler, log, tasks, transports),
                                          "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"hello")
            await writer.drain()
            for _ in range(200):
                if "returned" in log:
                    break
                await asyncio.sleep(0.01)
            await then(log, tasks)
        finally:
            writer.close()
            for transport in transports:
                transport.close()
            server.close()
            await server.wait_closed()
            await asyncio.sleep(0.01)  # the transports' closing callbacks

    loop = LOOPS[kind]()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


@pytest.fixture(params=sorted(LOOPS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_a_handler_that_does_not_wait_finishes_inside_data_received(kind: str) -> None:
    async def handler(data: bytes, log: list[Any]) -> None:
        task = asyncio.current_task()
        log.append(("handled", data, task is not None and task.get_name()))
        VAR.set("handler's")

    async def then(log: list[Any], tasks: list[Any]) -> None:
        # Handled between `received` and `returned`, with a Task of its own as the current
        # one (the log context is its name); the protocol's context is untouched.
        assert log == ["received", ("handled", b"hello", "c:test"), "returned"]
        assert tasks == [None]
        assert VAR.get() == "unset"
        await asyncio.sleep(0)  # its Task's idle step: nothing is left behind
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "c:test"]

    _run(kind, handler, then)


def test_a_handler_that_waits_goes_on_in_the_same_task(kind: str) -> None:
    async def handler(data: bytes, log: list[Any]) -> str:
        first = asyncio.current_task()
        VAR.set("mine")
        # asyncio.timeout needs the current task, and cancels that task at its deadline:
        # it must be the one that goes on after the wait.
        async with asyncio.timeout(5):
            await asyncio.sleep(0.01)
        log.append(("after wait", asyncio.current_task() is first, VAR.get()))
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(5)
        except TimeoutError:
            log.append("timed out")
        return "done"

    async def then(log: list[Any], tasks: list[Any]) -> None:
        assert log[:2] == ["received", "returned"]
        [task] = tasks
        assert await asyncio.wait_for(task, 5) == "done"
        assert log[2:] == [("after wait", True, "mine"), "timed out"]

    _run(kind, handler, then)


def test_an_error_is_the_task_s_and_a_cancel_before_its_first_step_holds(kind: str) -> None:
    async def failing(data: bytes, log: list[Any]) -> None:
        raise ValueError("bad input")

    async def then(log: list[Any], tasks: list[Any]) -> None:
        assert tasks == [None]  # finished, by raising: the Task reports it
        loop = asyncio.get_running_loop()
        errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, context: errors.append(context))

        started: list[str] = []

        async def waits() -> None:
            started.append("first step")
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                started.append("cancelled in its wait")
                raise

        # Started outside any task, then cancelled before the loop ran its Task once.
        box: list[Any] = []
        loop.call_soon(lambda: box.append(eager.start(loop, waits())))
        await asyncio.sleep(0)
        [task] = box
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert started == ["first step", "cancelled in its wait"]

    _run(kind, failing, then)


async def test_inside_a_task_the_first_step_waits_for_its_turn() -> None:
    ran: list[str] = []

    async def handler() -> None:
        ran.append("handler")

    task = eager.start(asyncio.get_running_loop(), handler())
    ran.append("caller")
    assert task is not None
    await task
    assert ran == ["caller", "handler"]
