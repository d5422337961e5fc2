"""docs/protocol.md is the contract: every name the code uses must be documented there."""

from pathlib import Path

import pytest

from signaling.errors import ErrorCode
from signaling.protocol import STATE_KEYS, ClientEvent, LeaveReason, ServerEvent

DOC = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()


@pytest.mark.parametrize("name", [*ClientEvent, *ServerEvent])
def test_every_event_is_documented(name: str) -> None:
    assert f"`{name}" in DOC


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_code_is_documented(code: ErrorCode) -> None:
    assert f"| `{code}`" in DOC


@pytest.mark.parametrize("word", [*LeaveReason, *STATE_KEYS])
def test_reasons_and_state_keys_are_documented(word: str) -> None:
    assert word in DOC
