"""Atomic file writes: an interrupted or failed write never leaves a half-written file behind."""

from __future__ import annotations

import errno
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from denoisecli.errors import DenoiseError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


PARTIAL = ".partial"
# a full disk or quota: every file after the one that met it would fail the same way
NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
STALE_AFTER_S = 600.0


def remove_stale_partials(outputs: list[Path], older_than: float = STALE_AFTER_S) -> int:
    """Delete temp files that a killed run (``kill -9``, power cut) left beside these outputs.

    Only our own temp names for these outputs are touched, and only once they are older than
    any write takes, so a run writing the same files at the same time is left alone.
    Returns how many were removed.
    """
    names: dict[Path, set[str]] = {}
    for out in outputs:
        names.setdefault(Path(out).parent, set()).add(Path(out).name)
    removed, cutoff = 0, time.time() - older_than
    for folder, wanted in names.items():
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            n = entry.name
            if not (n.startswith(".") and n.endswith(PARTIAL)) or n[1:-len(PARTIAL)].rpartition(".")[0] not in wanted:
                continue
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                continue
    return removed


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write into a hidden temp file beside ``path``, fsync, then rename over ``path``.

    The rename is atomic on one filesystem, so readers see the old file or the new one,
    never a torn one; on any failure the temp file is removed and the old file kept.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL, dir=path.parent)
    except OSError as exc:
        raise DenoiseError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    try:
        os.close(fd)
        with open(tmp, "w+b") as f:  # by its name, which writers such as tifffile read (an fd's is a number); readable, for a TIFF's EXIF
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise DenoiseError(f"{path}: cannot write ({exc.strerror or exc})") from exc
        raise


def out_of_space(exc: BaseException) -> bool:
    """Whether a failed write met a full disk (or quota), where a batch stops: until 2026-11-29
    it went on denoising each file for minutes to fail its write the same way."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in NO_SPACE:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def stopped_for_space(out: Path, written: int) -> str:
    """The line a batch that stopped at a full disk ends with."""
    return (f"no space left where {out} goes: {written} file(s) written; free some and run the same command again, "
            "which skips what is written")
