"""Writing files so that a reader never sees half of one, and reading the package's own data files. The bottom layer:
it imports no other `ladnn` module."""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
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


def load_cache(f: Path, load, why_bad):
    """A cache file read by `load`, or None when there is none. A damaged one (a truncated write, a full disk: `load`
    fails, or `why_bad(value)` says what is wrong) is named, removed, and None returned, so that the caller builds
    it again as if it had never been written."""
    if not f.exists():
        return None
    try:
        value = load(f)
        if not (why := why_bad(value)):
            return value
    except Exception as e:  # noqa: BLE001 - numpy and torch raise EOFError, ValueError, RuntimeError, pickle errors
        why = f"{type(e).__name__}: {e}"
    print(f"cache file {f} is damaged ({why}); removing it and building it again", flush=True)
    f.unlink(missing_ok=True)
    return None


def replace_folder(new: str | Path, final: str | Path) -> Path:
    """Move the finished folder `new` to `final`, replacing what is there: the old folder is renamed aside first
    and removed only once `new` is in place, so `final` holds the old folder or the new one, never a mix."""
    new, final = Path(new), Path(final)
    old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
    if final.exists():
        os.rename(final, old)
    os.rename(new, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def write_folder_atomic(folder: str | Path, files: dict[str, str | bytes]) -> Path:
    """Write every file of `folder` at once (all or nothing): into a hidden folder beside it, then swapped in
    (`replace_folder`). A failure midway leaves `folder` as it was."""
    folder = Path(folder)
    tmp = folder.parent / f".{folder.name}.new-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        for name, data in files.items():  # the folder is private until it is swapped in: plain writes suffice
            (tmp / name).write_bytes(data if isinstance(data, bytes) else data.encode())
        return replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def resource(name: str):
    """A file shipped inside the package (ladnn/resources/), readable from any install."""
    return resources.files("ladnn") / "resources" / name


MAX_FILE_BYTES = 256 * 2**20  # a larger input file is refused before it is read (a CT slice is a few MB)


class FileRefused(OSError):
    """An input path that is not read: a FIFO, a device, a folder, or a file over the size limit."""


def check_regular_file(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> int:
    """The size of a regular file of at most `max_bytes`; a FIFO, a device, a folder or a larger file is an
    FileRefused (an OSError) naming it (a FIFO would block its reader, `/dev/zero` never ends). Looked at with stat, not opened."""
    import stat

    st = os.stat(path)  # follows links: a link to a device is a device
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or
                stat.S_ISBLK(st.st_mode) else "a folder" if stat.S_ISDIR(st.st_mode) else "a special file")
        raise FileRefused(f"{path}: {kind}, not a regular file; refused")
    if st.st_size > max_bytes:
        raise FileRefused(f"{path}: {st.st_size} bytes exceeds the limit of {max_bytes} bytes a file; not read")
    return st.st_size
