"""Recordings: the live state of a room's recording, and the recordings kept on disk.

A recording is one directory `<recordings_dir>/<id>/` holding the per-track files a
media worker wrote and `catalog.json`, which the worker rewrites atomically as
tracks come and go (so a killed worker leaves a catalog as of its last change). The
node reads those directories for the REST API; in a multi-machine deployment the
workers and nodes share `recordings_dir` (a volume). The catalog's shape is in
docs/protocol.md ("Recording").
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import NotFound
from .ids import ParticipantId, RoomId, UserId

CATALOG = "catalog.json"
RECORDING_ID_RE = re.compile(r"R[0-9a-f]{16}")
FILE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def new_recording_id() -> str:
    return "R" + secrets.token_hex(8)


@dataclass(eq=False)
class Recording:
    """A room's recording while it runs (the node's view)."""

    id: str
    room: RoomId
    by: UserId
    started_at: float  # Unix seconds
    job: str | None = None
    worker: ParticipantId | None = None
    # False when the worker records what it forwards: participants send nothing more.
    upstream: bool = True

    def wire(self) -> dict[str, Any]:
        return {"recording": self.id, "active": True, "by": self.by,
                "startedAt": int(self.started_at * 1000), "worker": self.worker,
                "upstream": self.upstream}

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "room": self.room, "by": self.by, "startedAt": self.started_at,
                "job": self.job, "worker": self.worker, "upstream": self.upstream}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recording:
        return cls(id=d["id"], room=d["room"], by=d["by"], started_at=d["startedAt"],
                   job=d["job"], worker=d["worker"], upstream=d["upstream"])


def write_catalog(directory: Path, catalog: dict[str, Any]) -> None:
    """Replace `directory/catalog.json` atomically (write, fsync, rename)."""
    tmp = directory / (CATALOG + ".tmp")
    with tmp.open("w") as out:
        json.dump(catalog, out, indent=2)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(directory / CATALOG)


class RecordingStore:
    """The recordings under one directory, as the REST API shows them."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, recording_id: str) -> Path:
        if not RECORDING_ID_RE.fullmatch(recording_id):
            raise NotFound(f"no recording {recording_id!r}")
        path = self.root / recording_id
        if not (path / CATALOG).is_file():
            raise NotFound(f"no recording {recording_id!r}")
        return path

    def catalog(self, recording_id: str) -> dict[str, Any]:
        try:
            data = json.loads((self._dir(recording_id) / CATALOG).read_text())
        except (OSError, ValueError) as exc:
            raise NotFound(f"recording {recording_id!r} has no readable catalog") from exc
        if not isinstance(data, dict):
            raise NotFound(f"recording {recording_id!r} has no readable catalog")
        return data

    def list(self) -> list[dict[str, Any]]:
        """Every readable catalog, newest first."""
        found = []
        if self.root.is_dir():
            for entry in self.root.iterdir():
                try:
                    found.append(self.catalog(entry.name))
                except NotFound:
                    continue
        return sorted(found, key=lambda c: c.get("startedAt") or 0, reverse=True)

    def file(self, recording_id: str, name: str) -> Path:
        """A file the catalog lists (never any other path)."""
        catalog = self.catalog(recording_id)
        listed = {t.get("file") for t in catalog.get("tracks", []) if isinstance(t, dict)}
        listed.update(f for f in catalog.get("files", []) if isinstance(f, str))
        if not FILE_NAME_RE.fullmatch(name) or name not in listed:
            raise NotFound(f"recording {recording_id!r} has no file {name!r}")
        path = self._dir(recording_id) / name
        if not path.is_file():
            raise NotFound(f"file {name!r} of recording {recording_id!r} is missing")
        return path

    def delete(self, recording_id: str) -> None:
        shutil.rmtree(self._dir(recording_id))
