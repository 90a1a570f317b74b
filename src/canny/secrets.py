"""The API key as a masked value, where it comes from, and where it is stored.

Resolution order: explicit argument > ``ANTHROPIC_API_KEY`` > OS keyring > the key file
``key`` in canny's config directory (``CANNY_HOME``), readable by its owner only (mode 0600;
for headless machines with no keyring) > nothing. No other credential files are read.
A :class:`Secret` never shows its value in ``repr``, ``str``, f-strings or pickles; only
:meth:`Secret.reveal` returns it, and canny calls that in exactly one place (building the
SDK client).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

from canny.errors import ConfigError

__all__ = [
    "KEYRING_SERVICE",
    "KEYRING_USERNAME",
    "KeySource",
    "ResolvedKey",
    "Secret",
    "delete_key_file",
    "delete_keyring_key",
    "key_file_path",
    "keyring_available",
    "mask",
    "redact",
    "resolve_api_key",
    "set_key_file",
    "set_keyring_key",
]

KEYRING_SERVICE = "canny"
KEYRING_USERNAME = "anthropic-api-key"

KeySource = Literal["argument", "environment", "keyring", "file", "offline"]

_KEY_PATTERN = re.compile(r"sk-ant-[A-Za-z0-9_\-]{6,}")
#: Every value wrapped in a :class:`Secret`, so :func:`redact` also removes keys that are
#: not shaped like Anthropic keys (a gateway's own tokens).
_REVEALED: set[str] = set()


def mask(value: str) -> str:
    """A display form that identifies a key without revealing it: ``sk-ant-…WXYZ``."""
    if len(value) < 12:
        return "…"
    prefix = "sk-ant-" if value.startswith("sk-ant-") else ""
    return f"{prefix}…{value[-4:]}"


def redact(text: str, *secrets: str) -> str:
    """Remove every given secret, every :class:`Secret` value, and anything shaped like an
    Anthropic key from ``text``."""
    for secret in (*secrets, *_REVEALED):
        if secret:
            text = text.replace(secret, "[redacted]")
    return _KEY_PATTERN.sub("[redacted]", text)


class Secret:
    """A string that refuses to be shown."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        if len(value) >= 8:  # shorter values would redact ordinary words
            _REVEALED.add(value)

    def reveal(self) -> str:
        """The real value. Call only where the value must leave the process."""
        return self._value

    @property
    def masked(self) -> str:
        return mask(self._value)

    @property
    def fingerprint(self) -> str:
        """A short, stable, one-way identifier (for per-key budgets and reports)."""
        return hashlib.sha256(self._value.encode()).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"Secret({self.masked!r})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")

    def __getstate__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")


@dataclass(frozen=True, slots=True)
class ResolvedKey:
    """A key and where it came from (``canny key status`` shows the source, never the key)."""

    secret: Secret
    source: KeySource


def _keyring() -> Any:
    try:
        import keyring
    except ImportError as exc:  # pragma: no cover - keyring is a core dependency
        raise ConfigError("the keyring package is not installed") from exc
    return keyring


def get_keyring_key() -> str | None:
    """The key stored in the OS keyring, or ``None`` (also when no keyring backend works)."""
    if os.environ.get("CANNY_NO_KEYRING"):
        return None
    try:
        value = _keyring().get_password(KEYRING_SERVICE, KEYRING_USERNAME)
    except Exception:
        return None
    return value or None


def set_keyring_key(value: str) -> None:
    """Store the key in the OS keyring."""
    value = value.strip()
    if not value:
        raise ConfigError("refusing to store an empty key")
    try:
        _keyring().set_password(KEYRING_SERVICE, KEYRING_USERNAME, value)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"could not store the key in the OS keyring ({type(exc).__name__})",
            hint="no keyring backend works here; use `canny key set --file` (a 0600 file) or export ANTHROPIC_API_KEY",
        ) from None


def delete_keyring_key() -> bool:
    """Delete the stored key; ``False`` when there was none."""
    if get_keyring_key() is None:
        return False
    try:
        _keyring().delete_password(KEYRING_SERVICE, KEYRING_USERNAME)
    except Exception as exc:
        raise ConfigError(f"could not delete the key from the OS keyring ({type(exc).__name__})") from None
    return True


def keyring_available() -> bool:
    """True when an OS keyring backend that can store secrets is usable here."""
    if os.environ.get("CANNY_NO_KEYRING"):
        return False
    try:
        backend = _keyring().get_keyring()
        priority = float(getattr(backend, "priority", 0))
    except Exception:
        return False
    return priority > 0 and type(backend).__module__ != "keyring.backends.fail"


def key_file_path(environ: Mapping[str, str] | None = None) -> Path:
    """The key file: ``key`` in canny's config directory."""
    from canny.config import config_dir

    return config_dir(environ) / "key"


def set_key_file(value: str, environ: Mapping[str, str] | None = None) -> Path:
    """Store the key in the key file, created with mode 0600 (owner read/write only)."""
    value = value.strip()
    if not value:
        raise ConfigError("refusing to store an empty key")
    path = key_file_path(environ)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".key.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(value + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"could not write the key file {path} ({exc.strerror or type(exc).__name__})") from None
    return path


def _read_key_file(environ: Mapping[str, str] | None = None) -> str | None:
    path = key_file_path(environ)
    try:
        info = path.stat()
    except OSError:
        return None
    if info.st_mode & 0o077:
        raise ConfigError(
            f"the key file {path} can be read by other users (mode {stat.S_IMODE(info.st_mode):o})",
            hint=f"run `chmod 600 {path}`, or `canny key set` again",
        )
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"could not read the key file {path} ({type(exc).__name__})") from None
    return value or None


def delete_key_file(environ: Mapping[str, str] | None = None) -> bool:
    """Delete the key file; ``False`` when there was none."""
    try:
        key_file_path(environ).unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ConfigError(f"could not delete the key file ({exc.strerror or type(exc).__name__})") from None
    return True


def resolve_api_key(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> ResolvedKey | None:
    """Find the key: explicit argument, ``ANTHROPIC_API_KEY``, the keyring, the key file."""
    env = os.environ if environ is None else environ
    if explicit:
        return ResolvedKey(Secret(explicit.strip()), "argument")
    from_env = env.get("ANTHROPIC_API_KEY", "").strip()
    if from_env:
        return ResolvedKey(Secret(from_env), "environment")
    stored = get_keyring_key()
    if stored:
        return ResolvedKey(Secret(stored.strip()), "keyring")
    from_file = _read_key_file(environ)
    if from_file:
        return ResolvedKey(Secret(from_file), "file")
    return None
