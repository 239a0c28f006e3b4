"""Write a file or a folder so that readers see the old version or the new one, never half of either.

Both write beside the target (same filesystem), fsync what they wrote and swap it in with one rename (a folder
that exists is exchanged with renameat2 RENAME_EXCHANGE where the filesystem has it). On error the temporary copy
is removed; one left by a killed writer is removed by the next write to the same target on this host. Permissions
come from the process umask (0002 in the stack's containers: group-writable), never a blanket 0666/0777.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> atomic_write(folder / "a.json", '{"x": 1}\\n')
    >>> with atomic_dir(folder / "model") as tmp:
    ...     _ = (tmp / "config.json").write_text("{}")
    >>> sorted(p.name for p in folder.iterdir()), (folder / "model" / "config.json").read_text()
    (['a.json', 'model'], '{}')
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import shutil
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_LIBC = ctypes.CDLL(None, use_errno=True)


def clear_stale(path: Path) -> None:
    """Remove the temporary copies of `path` that writers on this host left when they were killed (kill -9)."""
    prefix = f".{path.name}.{socket.gethostname()}-"
    for stale in path.parent.iterdir() if path.parent.is_dir() else ():
        pid = stale.name.removeprefix(prefix).split(".", 1)[0]
        if stale.name.startswith(prefix) and stale.name.endswith(".tmp") and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink(missing_ok=True)


def _temp_name(path: Path) -> Path:
    """A hidden sibling of `path` naming this host and process: `.NAME.HOST-PID.HEX.tmp` (stale ones cleared)."""
    clear_stale(path)
    return path.with_name(f".{path.name}.{socket.gethostname()}-{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _swap(tmp: Path, path: Path) -> Path | None:
    """Put `tmp` at `path` in one step; returns where the old folder went (to delete), if there was one."""
    if path.is_dir() and not path.is_symlink():
        renameat2, at_fdcwd, rename_exchange = getattr(_LIBC, "renameat2", None), -100, 2
        if renameat2 and renameat2(at_fdcwd, os.fsencode(tmp), at_fdcwd, os.fsencode(path), rename_exchange) == 0:
            return tmp  # now holds the old folder
        if renameat2 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(path))
        old = _temp_name(path)  # no exchange on this filesystem: two renames, `path` briefly absent
        os.rename(path, old)
        os.rename(tmp, path)
        return old
    os.replace(tmp, path)
    return None


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Replace `path` with `data` (str is UTF-8 encoded); parent folders are created as needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 minus the umask, like open()
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        _swap(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _settle(root: Path) -> None:
    """fsync every file under `root`, and give files the umask's mode where a library wrote them narrower
    (safetensors saves 0600). `root` was made with 0o777 minus the umask, so its own mode tells the umask."""
    dir_mode = stat.S_IMODE(root.stat().st_mode)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            path = os.path.join(folder, name)
            os.chmod(path, stat.S_IMODE(os.stat(path).st_mode) | dir_mode)
        for name in files:
            path = os.path.join(folder, name)
            os.chmod(path, stat.S_IMODE(os.stat(path).st_mode) | (dir_mode & 0o666))
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


@contextmanager
def atomic_dir(path: str | os.PathLike[str], replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; when the block succeeds it becomes `path`.

    An existing `path` must be empty unless `replace` is true (then the old folder is removed after the swap).
    On error the temporary folder is removed and `path` is left as it was.
    """
    path = Path(path)
    if path.exists() and not replace and any(path.iterdir()):
        raise FileExistsError(f"{path} already exists and is not empty")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    os.mkdir(tmp, 0o777)  # minus the umask
    try:
        yield tmp
        _settle(tmp)
        old = _swap(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
