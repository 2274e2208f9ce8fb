"""Output paths of the commands: checked before any work, written atomically with the umask's mode.

One rule for every output (`train --output` / `--save`, `recommend --output`, `evaluate --json`),
the rule `--storage` follows: the directory must exist (nothing is created for you) and be
writable; a file output must not be a directory.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from virtualmle.errors import ConfigError


def check_output_file(path: Path, flag: str = "--output") -> Path:
    """Refuse, before any work, an output path that cannot be written.

    The rule is the one `--storage` follows: the directory must exist (nothing is created for
    you), the path must not be a directory, and the directory must be writable.
    """
    path = path.expanduser().absolute()
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: is a directory; give a file name, e.g. {path / 'result.json'}")
    if not path.parent.is_dir():
        raise ConfigError(f"{flag} {path}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: directory {path.parent} is not writable")
    return path


def check_model_dir(path: Path) -> Path:
    """Refuse a --save target that is a file, lies in a missing directory, or is a non-empty
    directory that is not a saved model (so --save never overwrites unrelated files)."""
    path = path.expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--save {path}: is a file, not a directory")
    if path.is_dir() and any(path.iterdir()) and not (path / "model.json").is_file():
        raise ConfigError(f"--save {path}: a non-empty directory that is not a saved model; choose another")
    if not path.parent.is_dir():
        raise ConfigError(f"--save {path}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--save {path}: directory {path.parent} is not writable")
    return path


def umask_mode(mode: int = 0o666) -> int:
    """`mode` less the process umask: what a plain `open` would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    """Write `doc` to `path` via a temp file in the same directory and os.replace.

    The file gets the mode a plain `open` would give (0666 less the umask), not mkstemp's 0600.
    """
    path = path.resolve()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
