"""Writing files so that a reader never sees half of one: `write_atomic`.

Every file the project writes for a user or for another process (reports, summaries, bench
tables, trial specs, cache entries, the memory bank) goes through here: the data goes to a temp
file in the same directory, is flushed to disk, then `os.replace` swaps it in. A crash leaves the
old file or the new one, never a truncated one, and no temp file behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike[str], data: str | bytes, *, encoding: str = "utf-8") -> Path:
    """Write ``data`` (text or bytes) to ``path`` atomically, creating its directory; returns the path.

    Raises:
        OSError: the directory cannot be created or written (nothing is left behind).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data if isinstance(data, bytes) else data.encode(encoding))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are plain files other tools read
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
