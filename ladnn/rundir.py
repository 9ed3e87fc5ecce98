"""A run directory whose files are written atomically and which never looks complete unless it is."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

FILES = ("config.json", "history.csv", "model.pt", "predictions.csv", "metrics.json")


class RunExistsError(FileExistsError):
    pass


def write_atomic(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def status(run: str | Path) -> str:
    """'complete', 'running', 'failed' or 'absent'."""
    p = Path(run) / "status.json"
    return json.loads(p.read_text())["status"] if p.is_file() else "absent"


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def start(self, config: dict, overwrite: bool = False) -> None:
        if status(self.path) == "complete" and not overwrite:
            raise RunExistsError(f"{self.path} holds a finished run; pass --overwrite to replace it")
        if self.path.exists() and any(self.path.iterdir()) and status(self.path) == "absent":
            raise RunExistsError(f"{self.path} exists and is not a ladnn run directory; refusing to write into it")
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        self._status("running")
        self.write("config.json", json.dumps(config, indent=2))

    def write(self, name: str, data: str | bytes) -> None:
        write_atomic(self.path / name, data)

    def _status(self, state: str, **extra) -> None:
        self.write("status.json", json.dumps({"status": state, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}))

    def finish(self) -> None:
        missing = [f for f in FILES if not (self.path / f).is_file()]
        if missing:
            raise RuntimeError(f"{self.path}: run is missing {missing}")
        self._status("complete")

    def fail(self, err: BaseException) -> None:
        self._status("failed", error=f"{type(err).__name__}: {err}")
