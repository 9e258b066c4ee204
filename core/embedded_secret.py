"""The embedded mode's ingest secret: made once per checkout, kept in a file under ./var."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from core.security import new_signing_secret

FILE_NAME = "ingest-signing-secret"


def ingest_secret(directory: Path) -> str:
    """Return the ingest secret stored in `directory`, making it (mode 0600) the first time.

    Every process of `make run` reads its settings at once on a first start, so the file is
    written aside and linked into place: exactly one secret wins and nobody reads half of it.
    """
    path = directory / FILE_NAME
    if not path.exists():
        fd, draft = tempfile.mkstemp(dir=directory, prefix=f".{FILE_NAME}-")
        try:
            with os.fdopen(fd, "w") as out:  # mkstemp made it 0600
                out.write(new_signing_secret() + "\n")
            with contextlib.suppress(FileExistsError):  # another process won the race
                os.link(draft, path)
        finally:
            os.unlink(draft)
    return path.read_text().strip()
