"""Writing files so that a reader never sees half of one, and reading the package's own data files. The bottom layer:
it imports no other `ladnn` module."""
from __future__ import annotations

import os
import socket
import tempfile
from importlib import resources
from pathlib import Path


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write `data` to `path` all at once: into a temporary file beside it, then renamed over it. The temporary name
    carries the host and process and a random part, so writers on several machines sharing one folder (NFS) never
    share a temporary file; a reader sees the old file or the new one, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{socket.gethostname()}.{os.getpid()}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def resource(name: str):
    """A file shipped inside the package (ladnn/resources/), readable from any install."""
    return resources.files("ladnn") / "resources" / name
