"""The key: where it comes from, and that it never shows."""

from __future__ import annotations

import pickle

import pytest

from canny.secrets import Secret, mask, redact, resolve_api_key


class MemoryKeyring:
    """A keyring backend that keeps passwords in a dict."""

    priority = 1

    def __init__(self) -> None:
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        del self.store[(service, username)]


@pytest.fixture
def memory_keyring(monkeypatch: pytest.MonkeyPatch) -> MemoryKeyring:
    import keyring

    backend = MemoryKeyring()
    monkeypatch.delenv("CANNY_NO_KEYRING")
    monkeypatch.setattr(keyring, "get_password", backend.get_password)
    monkeypatch.setattr(keyring, "set_password", backend.set_password)
    monkeypatch.setattr(keyring, "delete_password", backend.delete_password)
    monkeypatch.setattr(keyring, "get_keyring", lambda: backend)
    return backend


def test_secret_never_shows(canary_key: str) -> None:
    """repr, str, format and f-strings of a Secret show only a masked form."""
    secret = Secret(canary_key)
    for text in (repr(secret), str(secret), f"{secret}", str.format("{}", secret), format(secret, "")):
        assert canary_key not in text
        assert text.endswith("ONLY')") or "…" in text
    assert secret.reveal() == canary_key


def test_secret_refuses_pickle(canary_key: str) -> None:
    """A Secret cannot be pickled (so it cannot ride along to another process)."""
    with pytest.raises(TypeError):
        pickle.dumps(Secret(canary_key))


def test_mask_and_redact(canary_key: str) -> None:
    """mask keeps only the prefix and last four; redact removes key-shaped text."""
    assert mask(canary_key) == "sk-ant-…ONLY"
    assert canary_key not in redact(f"header: Bearer {canary_key} end")
    assert "[redacted]" in redact(f"x {canary_key}")


def test_resolution_order(monkeypatch: pytest.MonkeyPatch, memory_keyring: MemoryKeyring) -> None:
    """argument > ANTHROPIC_API_KEY > keyring > nothing."""
    assert resolve_api_key() is None
    memory_keyring.set_password("canny", "anthropic-api-key", "sk-ant-api03-CANARY-keyring")
    assert resolve_api_key().source == "keyring"  # type: ignore[union-attr]
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-CANARY-env")
    found = resolve_api_key()
    assert found is not None and found.source == "environment"
    explicit = resolve_api_key("sk-ant-api03-CANARY-arg")
    assert explicit is not None and explicit.source == "argument"
    assert explicit.secret.reveal() == "sk-ant-api03-CANARY-arg"


def test_cli_key_set_status_delete(memory_keyring: MemoryKeyring, canary_key: str) -> None:
    """`canny key set` stores from stdin, `status` names the source masked, `delete` removes it."""
    from click.testing import CliRunner

    from canny.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["key", "set", "--stdin"], input=canary_key + "\n")
    assert result.exit_code == 0, result.output
    assert memory_keyring.store[("canny", "anthropic-api-key")] == canary_key
    status = runner.invoke(main, ["key", "status"])
    assert status.exit_code == 0
    assert "OS keyring" in status.output
    assert canary_key not in status.output + result.output
    gone = runner.invoke(main, ["key", "delete"])
    assert gone.exit_code == 0
    assert not memory_keyring.store
    missing = runner.invoke(main, ["key", "status"])
    assert missing.exit_code == 2
