"""Eager task start (signaling/eager.py) on a real loopback TCP connection, on asyncio's
loop and on uvloop (what `mikoto-rtc serve` runs): a handler started from a protocol's
`data_received` runs there until it first waits, and goes on in a Task. With `task` that
Task is the current one from the first step on (redis-py needs it); without, there is
none until the handler waits."""

from __future__ import annotations

import asyncio
import contextvars
import gc
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
                 transports: list[asyncio.BaseTransport], task: bool) -> None:
        self.handler, self.log, self.tasks, self.task = handler, log, tasks, task
        self.transports = transports

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transports.append(transport)

    def data_received(self, data: bytes) -> None:
        self.log.append("received")
        loop = asyncio.get_running_loop()
        self.tasks.append(eager.start(loop, self.handler(data, self.log), task=self.task,
                                      name="c:test"))
        self.log.append("returned")


Then = Callable[[list[Any], list[Any], list[dict[str, Any]]], Awaitable[None]]


def _run(kind: str, handler: Handler, then: Then, *, task: bool = True) -> None:
    """Send one chunk to a protocol on a loopback port; `then` checks the log, what
    `start` returned, and what the loop's exception handler was given."""
    async def main() -> None:
        log: list[Any] = []
        tasks: list[Any] = []
        errors: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, c: errors.append(c))
        transports: list[asyncio.BaseTransport] = []
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Starter(handler, log, tasks, transports, task),
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
            await then(log, tasks, errors)
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


@pytest.mark.parametrize("task", [True, False], ids=["task", "no-task"])
def test_a_handler_that_does_not_wait_finishes_inside_data_received(kind: str,
                                                                    task: bool) -> None:
    async def handler(data: bytes, log: list[Any]) -> None:
        current = asyncio.current_task()
        log.append(("handled", data, current and current.get_name()))
        VAR.set("handler's")

    async def then(log: list[Any], tasks: list[Any], errors: list[dict[str, Any]]) -> None:
        # Handled between `received` and `returned`: with `task`, in a Task of its own
        # (the log context is its name); the protocol's context is untouched.
        assert log == ["received", ("handled", b"hello", "c:test" if task else None),
                       "returned"]
        assert tasks == [None]
        assert VAR.get() == "unset"
        await asyncio.sleep(0)  # its Task's idle step: nothing is left behind
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "c:test"]

    _run(kind, handler, then, task=task)


def test_without_task_one_is_made_when_the_handler_waits(kind: str) -> None:
    async def handler(data: bytes, log: list[Any]) -> str:
        log.append(("first step", asyncio.current_task()))
        VAR.set("mine")
        await asyncio.sleep(0.01)
        current = asyncio.current_task()
        log.append(("after wait", current and current.get_name(), VAR.get()))
        return "done"

    async def then(log: list[Any], tasks: list[Any], errors: list[dict[str, Any]]) -> None:
        assert log[:3] == ["received", ("first step", None), "returned"]
        [task] = tasks
        assert await asyncio.wait_for(task, 5) == "done"
        assert log[3:] == [("after wait", "c:test", "mine")]

    _run(kind, handler, then, task=False)


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

    async def then(log: list[Any], tasks: list[Any], errors: list[dict[str, Any]]) -> None:
        assert log[:2] == ["received", "returned"]
        [task] = tasks
        assert await asyncio.wait_for(task, 5) == "done"
        assert log[2:] == [("after wait", True, "mine"), "timed out"]

    _run(kind, handler, then)


@pytest.mark.parametrize("task", [True, False], ids=["task", "no-task"])
def test_an_error_in_the_first_step_is_reported(kind: str, task: bool) -> None:
    async def failing(data: bytes, log: list[Any]) -> None:
        raise ValueError("bad input")

    async def then(log: list[Any], tasks: list[Any], errors: list[dict[str, Any]]) -> None:
        assert log == ["received", "returned"] and tasks == [None]
        # With a Task, it holds the error until it is dropped, as any Task does.
        for _ in range(100):
            if errors:
                break
            gc.collect()
            await asyncio.sleep(0.01)
        assert [type(e.get("exception")) for e in errors] == [ValueError]

    _run(kind, failing, then, task=task)


@pytest.mark.parametrize("task", [True, False], ids=["task", "no-task"])
def test_a_cancel_before_the_task_s_first_step_reaches_the_wait(kind: str, task: bool) -> None:
    started: list[str] = []

    async def waits() -> None:
        started.append("first step")
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            started.append("cancelled in its wait")
            raise

    async def main() -> None:
        loop = asyncio.get_running_loop()
        box: list[Any] = []

        def callback() -> None:  # outside any task, as a protocol's callback is
            started_task = eager.start(loop, waits(), task=task)
            assert started_task is not None
            started_task.cancel()  # before the loop ever ran that Task
            box.append(started_task)

        loop.call_soon(callback)
        while not box:
            await asyncio.sleep(0)
        with pytest.raises(asyncio.CancelledError):
            await box[0]
        assert started == ["first step", "cancelled in its wait"]

    loop = LOOPS[kind]()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


async def test_inside_a_task_the_first_step_waits_for_its_turn() -> None:
    ran: list[str] = []

    async def handler() -> None:
        ran.append("handler")

    task = eager.start(asyncio.get_running_loop(), handler(), task=False)
    ran.append("caller")
    assert task is not None
    await task
    assert ran == ["caller", "handler"]
