"""Files written whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

TMP_SUFFIX = ".kmcorrect-tmp"  # every temporary file ends so: a rerun can sweep strays


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` (str as UTF-8) to a unique temporary file beside ``path``, then rename it
    over ``path``: a reader in another process, or a writer killed midway, never leaves half a
    file. Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
