"""What both clients share: settings, key, ledger, budgets and preparing a call.

:class:`ClientBase` resolves configuration once, opens the ledger on first use, resolves
the key (or starts the embedded emulator when offline), turns a prompt into a
:class:`~canny._call.CallSpec`, and reserves budgets before anything is sent.
``canny.client`` adds the sync and async I/O on top.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, TypeVar, cast, overload
from urllib.parse import urlsplit

from canny import errors
from canny._call import CallRun, CallSpec, lease_for
from canny.books import Books
from canny.config import Settings, Timeouts, check_base_url, load_settings, plain_http_proxy
from canny.errors import CannyWarning
from canny.retry import RetryPolicy
from canny.secrets import ResolvedKey, Secret, resolve_api_key

if TYPE_CHECKING:
    import httpx2

    from canny.budget import Reservation, Reserver
    from canny.caching import CacheMode, CacheTTL
    from canny.ledger import Ledger
    from canny.pricing import PriceTable

__all__ = [
    "OFFLINE_KEY",
    "ClientBase",
    "Prompt",
    "aiter_events",
    "call_keywords",
    "call_signature",
    "check_model",
    "estimate_keywords",
    "estimate_signature",
    "sdk_http_client",
    "signature_of",
    "spec_args",
]

OFFLINE_KEY = "sk-ant-offline-emulator-0000"
_warned_models: set[str] = set()

#: A prompt: a string (one user turn) or the messages themselves.
Prompt = str | Sequence[Mapping[str, Any]]

_P = ParamSpec("_P")
_Self = TypeVar("_Self")
_R = TypeVar("_R")


def call_keywords(
    prompt: Prompt,
    *,
    system: Prompt | None = None,
    model: str | None = None,
    max_tokens: int | None = None,
    project: str | None = None,
    tags: Iterable[str] | None = None,
    session_id: str | None = None,
    max_cost: Decimal | float | str | None = None,
    cache: CacheMode | None = None,
    cache_ttl: CacheTTL | None = None,
    fallback_model: str | None = None,
    **params: Any,
) -> None:
    """The one signature of ``create`` and ``stream`` on clients and sessions (a session
    sets ``session_id`` itself); any other keyword is an API parameter."""


#: The keywords of :func:`call_keywords` that :meth:`ClientBase._spec` takes by name.
_SPEC_KEYS = (
    "system",
    "model",
    "max_tokens",
    "project",
    "tags",
    "session_id",
    "max_cost",
    "cache",
    "cache_ttl",
    "fallback_model",
)


def spec_args(options: Mapping[str, Any]) -> dict[str, Any]:
    """Split a call's keywords into :meth:`ClientBase._spec` arguments (the rest are API params)."""
    args = {k: options.get(k) for k in _SPEC_KEYS}
    args["params"] = {k: v for k, v in options.items() if k not in _SPEC_KEYS}
    return args


def signature_of(
    template: Callable[_P, object],
) -> Callable[[Callable[Concatenate[_Self, ...], _R]], Callable[Concatenate[_Self, _P], _R]]:
    """A decorator giving ``method(self, *args, **options)`` the parameters of ``template``,
    for type checkers (callers' keywords are checked) and for ``help()`` alike."""
    shared = inspect.signature(template).parameters.values()

    def decorate(method: Callable[Concatenate[_Self, ...], _R]) -> Callable[Concatenate[_Self, _P], _R]:
        own = inspect.signature(method)
        method.__signature__ = own.replace(parameters=[next(iter(own.parameters.values())), *shared])  # type: ignore[attr-defined]
        return method  # it takes what the template declares

    return decorate


#: ``@call_signature`` on ``create``/``stream``: their keywords are those of :func:`call_keywords`.
call_signature = signature_of(call_keywords)


def estimate_keywords(
    prompt: Prompt,
    *,
    model: str | None = None,
    max_tokens: int | None = None,
    system: Prompt | None = None,
    tags: Iterable[str] | None = None,
    **params: Any,
) -> None:
    """The signature of ``estimate`` on both clients (any other keyword is an API parameter)."""


#: ``@estimate_signature`` on ``estimate``: its keywords are those of :func:`estimate_keywords`.
estimate_signature = signature_of(estimate_keywords)


def _messages(prompt: str | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(m) for m in prompt]


def check_model(model: str, *, today: date | None = None, table: PriceTable | None = None) -> str:
    """Resolve an alias; warn (once per model per process) about a retired or retiring model.

    The server decides what it serves: a gateway, or an extended date, may still serve a
    model past its retirement date, so a retired model is warned about and sent anyway. If
    the API answers 404, the error says when the model was retired and what to use
    (:func:`canny._sdk_errors.retirement`).
    """
    from canny._sdk_errors import retirement
    from canny.pricing import model_info, resolve_model

    resolved = resolve_model(model, table=table)
    info = model_info(resolved, table=table)
    if info is None:
        return resolved
    current = today or date.today()
    gone = retirement(resolved, today=current, table=table)
    if gone is not None:
        if f"retired:{resolved}" not in _warned_models:
            _warned_models.add(f"retired:{resolved}")
            warnings.warn(
                f"{gone}; sending anyway (the API answers 404 if it no longer serves it); {gone.advice}",
                CannyWarning,
                stacklevel=3,
            )
        return resolved
    if info.retires_at is None:
        return resolved
    if (info.retires_at - current).days <= 90 and resolved not in _warned_models:
        _warned_models.add(resolved)
        warnings.warn(
            f"{resolved} retires on {info.retires_at.isoformat()}; move to a newer model before then",
            CannyWarning,
            stacklevel=3,
        )
    return resolved


@overload
def sdk_http_client(
    base_url: str, *, offline: bool = ..., timeout: Any = ..., asynchronous: Literal[False] = ...
) -> httpx2.Client: ...
@overload
def sdk_http_client(
    base_url: str, *, offline: bool = ..., timeout: Any = ..., asynchronous: Literal[True]
) -> httpx2.AsyncClient: ...
@overload
def sdk_http_client(
    base_url: str, *, offline: bool = ..., timeout: Any = ..., asynchronous: bool = ...
) -> httpx2.Client | httpx2.AsyncClient: ...
def sdk_http_client(
    base_url: str, *, offline: bool = False, timeout: Any = None, asynchronous: bool = False
) -> httpx2.Client | httpx2.AsyncClient:
    """The SDK's default HTTP client, made safe to carry the key.

    Redirects are never followed (a 3xx becomes an error naming its ``Location``, so the
    prompt and key are not re-posted elsewhere). The embedded emulator ignores proxy
    variables. A plain ``http://`` base URL goes direct or through a proxy on this machine,
    never through another host (:func:`canny.config.plain_http_proxy` refuses that);
    ``https://`` keeps the proxies the environment configures.
    """
    import anthropic

    kwargs: dict[str, Any] = {"follow_redirects": False}
    if timeout is not None:
        kwargs["timeout"] = timeout
    if offline:
        kwargs["trust_env"] = False
    elif urlsplit(base_url).scheme == "http":
        kwargs["trust_env"] = False  # canny chose the route itself; httpx must not add one
        proxy = plain_http_proxy(base_url)
        if proxy is not None:
            kwargs["proxy"] = proxy
    sync_cls, async_cls = _self_closing_clients(anthropic.DefaultHttpxClient, anthropic.DefaultAsyncHttpxClient)
    client: httpx2.Client | httpx2.AsyncClient = async_cls(**kwargs) if asynchronous else sync_cls(**kwargs)
    return client


@functools.cache
def _self_closing_clients(sync_base: type[Any], async_base: type[Any]) -> tuple[type[Any], type[Any]]:
    """Subclasses of the SDK's default clients that release their pool when collected, as
    the client the SDK builds for itself does (a client nobody closed leaks no socket)."""

    class SelfClosing(sync_base):  # type: ignore[misc]
        def __del__(self) -> None:
            if not self.is_closed:
                with contextlib.suppress(Exception):
                    self.close()

    class AsyncSelfClosing(async_base):  # type: ignore[misc]
        def __del__(self) -> None:
            if not self.is_closed:
                with contextlib.suppress(Exception):
                    asyncio.get_running_loop().create_task(self.aclose())

    return SelfClosing, AsyncSelfClosing


class ClientBase:
    """Configuration, key, ledger and call preparation shared by both clients."""

    #: The SDK client (``anthropic.Anthropic`` or ``AsyncAnthropic``), built on first use.
    _sdk_client: Any = None

    def __init__(
        self,
        *,
        api_key: str | None = None,
        model: str | None = None,
        base_url: str | None = None,
        profile: str | None = None,
        max_tokens: int | None = None,
        ledger: Ledger | str | Path | Literal[False] | None = None,
        budget: Reserver | None = None,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        project: str | None = None,
        tags: Iterable[str] = (),
        log_content: bool | None = None,
        offline: bool = False,
        settings: Settings | None = None,
        http_client: Any = None,
    ) -> None:
        if settings is None:
            settings = load_settings(profile=profile, model=model, base_url=base_url, max_tokens=max_tokens)
        else:  # explicit arguments still win over a given Settings
            changes: dict[str, Any] = {"model": model, "max_tokens": max_tokens}
            if base_url:
                changes["base_url"] = check_base_url(base_url)
            settings = replace(settings, **{k: v for k, v in changes.items() if v is not None})
        self.settings = settings
        self.timeouts = timeouts or self.settings.timeouts
        self.retry_policy = retry or RetryPolicy.from_settings(self.settings.retry)
        #: Guards the lazy set-up (ledger, key, embedded emulator, SDK client) so one client
        #: can be shared by threads.
        self._init_lock = threading.RLock()
        self.books = Books(
            settings,
            ledger=ledger,
            budget=budget,
            project=project,
            tags=tags,
            log_content=log_content,
            lock=self._init_lock,
        )
        self.project = self.books.project
        self.tags = self.books.tags
        self.log_content = self.books.log_content
        self.budget = budget
        self._explicit_key = api_key
        self._key: ResolvedKey | None = None
        self._offline = offline
        self._emulator: Any = None
        self._base_url = self.settings.base_url
        self._http_client = http_client

    # -- resources -----------------------------------------------------------------------
    @property
    def ledger(self) -> Ledger | None:
        """The ledger (opened on first use); ``None`` when disabled with ``ledger=False``.
        Raises :class:`~canny.errors.LedgerUnavailable` when it cannot be opened: a call is
        never sent without a record (:class:`canny.books.Books`)."""
        return self.books.ledger

    def _start_offline(self) -> None:
        if self._emulator is None:
            from canny.emulator import serve_in_thread

            self._emulator_cm = serve_in_thread()
            self._emulator = self._emulator_cm.__enter__()
            self._base_url = self._emulator.base_url

    def _sdk_once(self, build: Callable[[], _R]) -> _R:
        """The SDK client of either twin, built by ``build`` on first use (once, however
        many threads ask at the same time)."""
        if self._sdk_client is None:
            with self._init_lock:
                if self._sdk_client is None:
                    self._sdk_client = build()
        return cast(_R, self._sdk_client)

    def resolve_key(self) -> ResolvedKey:
        """The API key this client uses (argument, environment, keyring; or the offline
        emulator's), as a masked :class:`~canny.secrets.Secret`. Raises
        :class:`~canny.errors.MissingKeyError` when there is none."""
        return self._resolve_key()

    def _resolve_key(self) -> ResolvedKey:
        if self._key is not None:
            return self._key
        with self._init_lock:
            return self._resolve_key_locked()

    def _resolve_key_locked(self) -> ResolvedKey:
        if self._key is None:
            if self._offline:
                self._start_offline()
                self._key = ResolvedKey(Secret(self._explicit_key or OFFLINE_KEY), "offline")
            else:
                found = resolve_api_key(self._explicit_key)
                if found is None:
                    raise errors.MissingKeyError("no API key found")
                self._key = found
        return self._key

    @property
    def base_url(self) -> str:
        self._resolve_key()
        return self._base_url or "https://api.anthropic.com"

    def flush(self) -> None:
        """Wait until every call made so far is in the ledger. Rows are written behind the
        call, on a thread of their own (:mod:`canny.ledger.writer`); this process's own
        reads and ``close()`` wait for them anyway, so only another process reading the
        ledger needs this. Warnings for rows that had to be spooled are shown now."""
        self.books.flush()

    def _close_owned(self) -> None:
        if self._emulator is not None:
            self._emulator_cm.__exit__(None, None, None)
            self._emulator = None
        self.books.close()

    # -- calls ---------------------------------------------------------------------------
    def _spec(
        self,
        prompt: str | Sequence[Mapping[str, Any]],
        *,
        stream: bool,
        system: str | Sequence[Mapping[str, Any]] | None,
        model: str | None,
        max_tokens: int | None,
        project: str | None,
        tags: Iterable[str] | None,
        session_id: str | None,
        max_cost: Decimal | float | str | None,
        params: Mapping[str, Any],
        cache: str | None = None,
        cache_ttl: str | None = None,
        fallback_model: str | None = None,
    ) -> CallSpec:
        from canny.caching import apply_cache, check_cache_settings
        from canny.pricing import default_table

        mode, ttl = check_cache_settings(cache or self.settings.cache, cache_ttl or self.settings.cache_ttl)

        key = self._resolve_key()
        self._check_route()
        table = default_table()
        resolved = check_model(model or self.settings.model, table=table)
        body: dict[str, Any] = {
            "model": resolved,
            "max_tokens": max_tokens or self.settings.max_tokens,
            "messages": _messages(prompt),
            **params,
        }
        if system is not None:
            body["system"] = system if isinstance(system, str) else [dict(s) for s in system]
        if mode != "off":
            body = apply_cache(body, model=resolved, mode=mode, ttl=ttl)
        limit = max_cost if max_cost is not None else self.settings.max_cost
        return self.books.spec(
            resolved,
            body,
            stream=stream,
            endpoint=urlsplit(self.base_url).netloc,
            key_fingerprint=key.secret.fingerprint,
            project=project,
            tags=(tuple(tags) if tags is not None else self.tags) + (("offline",) if self._offline else ()),
            session_id=session_id,
            max_cost=Decimal(str(limit)) if limit is not None else None,
            table=table,
            fallback_model=check_model(fallback_model, table=table) if fallback_model else None,
        )

    def _estimate_spec(self, prompt: Prompt, options: Mapping[str, Any]) -> CallSpec:
        """The spec ``estimate`` prices (keywords of :func:`estimate_keywords`): the call
        ``create`` would send with them."""
        named = ("model", "max_tokens", "system", "tags")
        return self._spec(
            prompt,
            stream=False,
            system=options.get("system"),
            model=options.get("model"),
            max_tokens=options.get("max_tokens"),
            project=None,
            tags=options.get("tags"),
            session_id=None,
            max_cost=None,
            params={k: v for k, v in options.items() if k not in named},
        )

    def _history(self) -> Ledger | None:
        """The ledger for an estimate's history; ``None`` (no history) when it cannot be opened."""
        try:
            return self.ledger
        except errors.LedgerError:
            return None

    def _reserve(self, spec: CallSpec) -> Reservation | None:
        """Reserve ``spec`` against its ``max_cost`` and every budget in scope (may lower
        max_tokens, or refuse with a ``budget_refused`` row)."""
        ledger = self.ledger
        from canny.budget import MaxCostGuard

        per_call = MaxCostGuard(spec.max_cost) if spec.max_cost is not None else None
        return self.books.reserve(spec, ledger, per_call=per_call)

    def _batch_spec(self, params: Mapping[str, Any]) -> CallSpec:
        """The spec of one Message Batch request (``model`` and ``max_tokens`` filled in
        from the settings when left out; aliases resolved)."""
        named = ("messages", "system", "model", "max_tokens")
        rest = {k: v for k, v in params.items() if k not in named}
        return self._spec(
            params["messages"],
            stream=False,
            system=params.get("system"),
            model=params.get("model"),
            max_tokens=params.get("max_tokens"),
            project=None,
            tags=None,
            session_id=None,
            max_cost=None,
            params=rest,
        )

    def _prepare(self, spec: CallSpec) -> CallRun:
        """Open the ledger (or refuse: nothing is sent without a record), reserve budgets
        (may lower max_tokens or refuse) and set up the run."""
        ledger = self.ledger  # raises LedgerUnavailable before anything is reserved or sent
        reservation = self._reserve(spec)
        return self.books.run(
            spec, ledger, reservation=reservation, policy=self.retry_policy, lease=lease_for(self.timeouts)
        )

    def _timeout(self, *, stream: bool) -> httpx2.Timeout:
        import httpx2

        t = self.timeouts
        read = t.first_event if stream else t.total
        return httpx2.Timeout(connect=t.connect, read=read, write=t.idle, pool=t.connect)

    def _check_route(self) -> None:
        """Refuse, before anything is sent, a plain-http route through another machine."""
        if self._http_client is None and not self._offline:
            plain_http_proxy(self.base_url)

    def _sdk_kwargs(self, *, asynchronous: bool = False) -> dict[str, Any]:
        key = self._resolve_key()
        timeout = self._timeout(stream=True)
        kwargs: dict[str, Any] = {"api_key": key.secret.reveal(), "max_retries": 0, "timeout": timeout}
        if self._base_url:
            kwargs["base_url"] = self._base_url
        if self._http_client is not None:  # the caller's transport, used as given
            kwargs["http_client"] = self._http_client
        else:
            kwargs["http_client"] = sdk_http_client(
                self.base_url, offline=self._offline, timeout=timeout, asynchronous=asynchronous
            )
        return kwargs

    def _idle_timeout(self, response: httpx2.Response, run_started: float) -> None:
        """After the headers, bound each body read by the idle gap instead of first-event."""
        remaining = self.timeouts.total - (self.retry_policy.clock() - run_started)
        timeout = response.request.extensions.get("timeout")
        if isinstance(timeout, dict):
            timeout["read"] = max(0.001, min(self.timeouts.idle, remaining))


async def aiter_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    """Decoded SSE payloads of an async byte stream (the async twin of ``iter_events``)."""
    from canny.streaming import SSEDecoder, event_payload

    decoder = SSEDecoder()
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event_payload(event)
    for event in decoder.flush():
        yield event_payload(event)
