"""Append-only JSONL manifests that make long jobs resumable."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator


class JsonlManifest:
    """One JSON record per finished unit of work, appended and fsynced as each unit completes.

    A restarted job reads ``done_keys()`` and skips those units. A torn last line (the job was
    killed mid-write) is ignored on reading and truncated away on the next append.

    Args:
        path: the ``.jsonl`` file.
        key: the record field that identifies a unit of work.
    """

    def __init__(self, path: str | os.PathLike, key: str = "id") -> None:
        self.path = Path(path)
        self.key = key

    def records(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                if not line.endswith("\n"):
                    return  # torn final line from a killed writer
                line = line.strip()
                if line:
                    yield json.loads(line)

    def done_keys(self) -> set[Any]:
        return {record[self.key] for record in self.records()}

    def append(self, record: dict[str, Any]) -> None:
        if self.key not in record:
            raise KeyError(f"{self.path}: manifest record lacks the key field {self.key!r}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_torn_tail()
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _drop_torn_tail(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as handle:
            data = handle.read()
            if data.endswith(b"\n"):
                return
            handle.truncate(data.rfind(b"\n") + 1)
