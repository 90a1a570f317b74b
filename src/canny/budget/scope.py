"""Which calls a budget covers: a :class:`Scope` (a project, a tag, an API key, or any of
them together), its label, how it matches a call and how it is stored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from canny.errors import ConfigError

if TYPE_CHECKING:
    from canny.budget.guard import CallLike

__all__ = ["ALL_CALLS", "Scope"]


@dataclass(frozen=True, slots=True)
class Scope:
    """The calls a budget covers: those of ``project`` (the call's project), with ``tag``
    (any of the call's tags) and made with ``key`` (the fingerprint of the call's API key,
    ``Secret.fingerprint``; never the key). A field left ``None`` does not narrow the
    scope, so ``Scope()`` (:data:`ALL_CALLS`) covers every call.

    ``str(scope)`` is its label: ``project acme, tag nightly`` or ``all calls``. In the
    budget tables a field that does not narrow is ``''`` (:attr:`stored`,
    :meth:`from_stored`).
    """

    project: str | None = None
    tag: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        for name, value in self.as_dict().items():
            if value is None:
                continue
            if not isinstance(value, str):
                raise ConfigError(f"budget {name} must be a string, not {value!r}")
            if not value.strip():
                raise ConfigError(f"budget {name} must not be empty")

    @classmethod
    def from_stored(cls, project: str, tag: str, key: str) -> Scope:
        """The scope of a row of the budget tables (``''``: does not narrow)."""
        return cls(str(project) or None, str(tag) or None, str(key) or None)

    @property
    def stored(self) -> tuple[str, str, str]:
        """``(project, tag, key_fingerprint)`` as the budget tables hold them (``''``: any)."""
        return (self.project or "", self.tag or "", self.key or "")

    def as_dict(self) -> dict[str, str | None]:
        """``{"project": ..., "tag": ..., "key": ...}`` (``None``: does not narrow)."""
        return {"project": self.project, "tag": self.tag, "key": self.key}

    def items(self) -> list[tuple[str, str]]:
        """The fields that narrow the scope, as ``(name, value)`` pairs, in order."""
        return [(name, value) for name, value in self.as_dict().items() if value is not None]

    @property
    def label(self) -> str:
        """``project acme, tag nightly`` or ``all calls``."""
        return ", ".join(f"{name} {value}" for name, value in self.items()) or "all calls"

    @property
    def suffix(self) -> str:
        """``[project=acme,tag=nightly]``, or ``''`` for all calls: what a budget's name
        adds to its period."""
        parts = ",".join(f"{name}={value}" for name, value in self.items())
        return f"[{parts}]" if parts else ""

    def __str__(self) -> str:
        return self.label

    def matches(self, call: CallLike) -> bool:
        """Whether ``call`` falls in this scope."""
        return (
            (self.project is None or call.project == self.project)
            and (self.tag is None or self.tag in call.tags)
            and (self.key is None or call.key_fingerprint == self.key)
        )

    def selects(self, other: Scope) -> bool:
        """This scope read as a filter over budgets' scopes (``remove_budgets``, ``canny
        budget reset``): whether ``other`` has each field this one sets. A field left
        ``None`` here matches any value of it, including one set: a filter, unlike a
        budget's scope, says nothing about calls. ``Scope()`` selects every scope."""
        fields = other.as_dict()
        return all(fields[name] == value for name, value in self.items())


#: The scope of a budget that covers every call.
ALL_CALLS = Scope()
