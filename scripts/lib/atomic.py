"""Write a file or a folder so that readers see the old version or the new one, never half of either.

Both write beside the target (same filesystem, so the final rename is atomic), fsync what they wrote, and
remove their temporary copy on any error. Permissions come from the process umask (0002 in the stack's
containers, so files are group-writable for every container user), never a blanket 0666/0777.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> atomic_write(folder / "a.json", '{"x": 1}\\n')
    >>> with atomic_dir(folder / "model") as tmp:
    ...     _ = (tmp / "config.json").write_text("{}")
    >>> sorted(p.name for p in folder.iterdir()), (folder / "model" / "config.json").read_text()
    (['a.json', 'model'], '{}')
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Replace `path` with `data` (str is UTF-8 encoded); parent folders are created as needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    tmp = _temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 minus the umask, like open()
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
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
        old = None
        if path.exists():
            old = _temp_name(path)
            os.rename(path, old)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
