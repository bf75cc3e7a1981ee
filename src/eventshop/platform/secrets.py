"""Per-installation secrets: generated on first use, kept outside the repository.

    password = secret("amqp-orders")        # read, or made and kept on first use

Each secret is one file in the secrets directory (`EVENTSHOP_SECRETS_DIR`, by default
/var/lib/eventshop/secrets): the directory is created with mode 0700 and each file written with
0600, so only the user who set the platform up (root, in `make setup`) can read them. Nothing
in the code or the repository is a password: the broker users' passwords, the operator's, the
gateway's development JWT key and the key that signs internal calls are all made here, with
`secrets.token_urlsafe` (256 bits), once per machine.

A deployment that manages its secrets elsewhere (Vault, Kubernetes secrets, compose secrets)
sets the settings that carry them (EVENTSHOP_AMQP_URL, EVENTSHOP_GATEWAY_JWT_SECRET, ...) and
never touches this directory.
"""

from __future__ import annotations

import os
import re
import secrets as _random
import time
from pathlib import Path

DEFAULT_DIR = Path("/var/lib/eventshop/secrets")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def secrets_dir() -> Path:
    return Path(os.environ.get("EVENTSHOP_SECRETS_DIR") or DEFAULT_DIR)


def _path(name: str) -> Path:
    if not _NAME.match(name):
        raise ValueError(f"not a secret's name: {name!r}")
    return secrets_dir() / name


def read_secret(name: str) -> str | None:
    """The secret, or None when it was never made (or this user may not read it)."""
    try:
        return _path(name).read_text().strip() or None
    except (FileNotFoundError, PermissionError, NotADirectoryError):
        return None


def secret(name: str) -> str:
    """The secret called `name`, made (and kept) on first use."""
    known = read_secret(name)
    if known is not None:
        return known
    path = _path(name)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    value = _random.token_urlsafe(32)
    # O_EXCL: two processes making the same secret at once agree on the first one written
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process is writing it: read what it wrote
        for _ in range(100):
            if (theirs := read_secret(name)) is not None:
                return theirs
            time.sleep(0.01)
        raise
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def keep_secret(name: str, value: str) -> None:
    """Write (or overwrite) a secret the caller chose, with the same modes as `secret`."""
    path = _path(name)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(f".{name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    partial.replace(path)
