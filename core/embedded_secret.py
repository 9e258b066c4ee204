"""The embedded mode's secrets: each made once per checkout and kept in a file under ./var.

Every process of `make run` reads its settings at once on a first start, so a secret is written
aside and hard-linked into place: exactly one value wins, nobody reads half of one, and all the
processes (and later restarts) agree on it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

from core.security import new_signing_secret

INGEST_SECRET_FILE = "ingest-signing-secret"  # noqa: S105  (file names, not secrets)
SESSION_KEY_FILE = "secret_key"


def kept(path: Path, make: Callable[[], str]) -> str:
    """Return the secret stored at `path`, making it with `make()` (mode 0600) the first time."""
    if not path.exists():
        fd, draft = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")  # made 0600
        try:
            with os.fdopen(fd, "w") as out:
                out.write(make() + "\n")
            with contextlib.suppress(FileExistsError):  # another process won the race
                os.link(draft, path)
        finally:
            os.unlink(draft)
    return path.read_text().strip()


def ingest_secret(directory: Path) -> str:
    """The ingest signing secret that `make run` and `meetinghooks simulate` share."""
    return kept(directory / INGEST_SECRET_FILE, new_signing_secret)


def session_key(directory: Path) -> str:
    """The key that signs the console's session cookies in the embedded mode."""
    return kept(directory / SESSION_KEY_FILE, lambda: secrets.token_urlsafe(48))
