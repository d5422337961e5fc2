"""Start a task's first step now, in the caller, as Python 3.12's `eager_start` does.

A WebSocket's input handler started as a plain Task first runs at the loop's next
turn, after every other callback of this one. Started eagerly, it runs inside
`data_received` until it first waits: with the embedded store a relayed message is
written before `data_received` returns, and no Task is made at all.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")

_NOTHING: Any = object()


class _Continued(Coroutine[Any, Any, T]):
    """A coroutine whose first step already ran: its Task's first step hands back what
    that step yielded, returned or raised, and later steps go to the coroutine."""

    __slots__ = ("_coro", "_error", "_result", "_yielded", "done")

    def __init__(self, coro: Coroutine[Any, Any, T], yielded: Any = _NOTHING) -> None:
        self._coro = coro
        self._yielded = yielded  # what its first step, already run, yielded
        self._result: Any = None
        self._error: BaseException | None = None
        self.done = False  # the first step finished the coroutine

    def first_step(self) -> None:
        try:
            self._yielded = self._coro.send(None)
        except StopIteration as stop:
            self._result, self.done = stop.value, True
        except BaseException as exc:  # raised again in the Task, which reports it
            self._error, self.done = exc, True

    def send(self, value: Any) -> Any:
        if self.done:
            error, self._error = self._error, None
            if error is not None:
                raise error
            raise StopIteration(self._result)
        yielded, self._yielded = self._yielded, _NOTHING
        if yielded is not _NOTHING:
            return yielded
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if self.done:  # cancelled before its Task's first step: it stays cancelled
            self._error = None
            raise typ if val is None else val
        self._yielded = _NOTHING  # the Task was cancelled while that step's wait is on
        return self._coro.throw(typ, val, tb)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, T]:  # pragma: no cover - Task steps it
        raise TypeError("driven by its Task only")


def start(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], *, task: bool,
          name: str | None = None) -> asyncio.Task[Any] | None:
    """Run `coro` now until it first waits; a Task goes on with it from there. None
    when it finished in that first step. The step runs in a context of its own, as a
    Task's would.

    With `task`, that Task exists from the start and is the current task during the
    first step, as `asyncio.timeout` (redis-py's commands) needs; it takes one idle
    step after a first step that finished. Without it, the first step has no current
    task and a Task is made only if it waits: 0.45 µs per start against 1.96 µs
    (a plain Task: 0.91 µs).

    Outside a task only (a protocol's callback): inside one, `coro` becomes a Task as
    usual, its first step at its turn.
    """
    if asyncio.current_task(loop) is not None:
        return loop.create_task(coro, name=name)
    context = contextvars.copy_context()
    if not task:
        try:
            yielded = context.run(coro.send, None)
        except StopIteration:
            return None
        except asyncio.CancelledError:
            return None  # as a Task that was cancelled: nothing to report
        except Exception as exc:  # as a Task's "exception was never retrieved"
            loop.call_exception_handler({"message": "an eagerly started coroutine failed",
                                         "exception": exc})
            return None
        return loop.create_task(_Continued(coro, yielded), name=name, context=context)
    continued: _Continued[Any] = _Continued(coro)
    first = loop.create_task(continued, name=name, context=context)
    asyncio.tasks._enter_task(loop, first)
    try:
        context.run(continued.first_step)
    finally:
        asyncio.tasks._leave_task(loop, first)
    return None if continued.done else first
