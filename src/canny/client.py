"""``canny.Client`` and ``canny.AsyncClient``: streamed and non-streamed calls.

Both build the SDK client with ``max_retries=0`` and run every call through one
:class:`~canny._call.CallRun` and its attempt loop (:class:`canny.retry.Attempts`): one
error mapping, one usage accumulator, one ledger row per attempt. Only the I/O differs between them; what they
share (settings, key, ledger, budgets) is in :mod:`canny._client_base`.

::

    with canny.Client() as client:
        with client.stream("Write a haiku about invoices") as stream:
            for text in stream:
                print(text, end="", flush=True)
        result = stream.result          # CallResult: outcome, usage, cost, ...

``cache="auto"`` (per call, or ``cache = "auto"`` in config.toml) marks the stable prefix
of the request for prompt caching (:func:`canny.caching.apply_cache`); ``cache_ttl``
chooses ``"5m"`` (default) or ``"1h"``. Off unless asked for: see docs/caching.md.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from canny._call import Attempt, CallRun, CallSpec
from canny._client_base import (
    OFFLINE_KEY,
    ClientBase,
    Prompt,
    aiter_events,
    call_signature,
    check_model,
    estimate_signature,
    sdk_http_client,
    spec_args,
)
from canny._sdk_errors import translate
from canny.batches import BatchBook, Batches
from canny.estimate import Estimate, count_body, estimated
from canny.fallback import announce, fallback_spec, merged
from canny.session import AsyncSession, Session, cap_signature
from canny.streaming import iter_events

if TYPE_CHECKING:
    import anthropic

    from canny.result import CallResult

__all__ = [
    "OFFLINE_KEY",
    "AsyncClient",
    "AsyncMessageStream",
    "Client",
    "MessageStream",
    "check_model",
    "sdk_http_client",
    "translate",
]

#: Called with the call's run when a stream ends (finished, failed or closed early).
OnEnd = Callable[[CallRun], None]
#: Called with the refused result just before a stream goes on with its fallback model.
OnFallback = Callable[["CallResult"], None]


class Client(ClientBase):
    """A synchronous client. Use as a context manager, or call :meth:`close`."""

    _sdk_client: anthropic.Anthropic | None = None
    _batches: Batches | None = None

    def _sdk(self) -> anthropic.Anthropic:
        import anthropic

        return self._sdk_once(lambda: anthropic.Anthropic(**self._sdk_kwargs()))

    @call_signature
    def stream(self, prompt: Prompt, **options: Any) -> MessageStream:
        """Start a streamed call. Iterate the returned stream for text as it arrives;
        ``stream.result`` then holds the :class:`~canny.result.CallResult`."""
        spec = self._spec(prompt, stream=True, **spec_args(options))
        return self._stream(spec)

    def _stream(self, spec: CallSpec, on_end: OnEnd | None = None) -> MessageStream:
        return MessageStream(self, self._prepare(spec), on_end=on_end)

    @call_signature
    def create(self, prompt: Prompt, **options: Any) -> CallResult:
        """A non-streamed call, retried per the policy. Returns the :class:`CallResult`."""
        spec = self._spec(prompt, stream=False, **spec_args(options))
        result = self._create(spec)
        fallback = fallback_spec(spec, result)
        if fallback is None:
            return result
        announce(result, fallback)
        return merged(result, self._create(fallback))

    def _create(self, spec: CallSpec) -> CallResult:
        attempts = self._prepare(spec).retrying()
        for attempt in attempts:
            with attempt as state:
                raw = self._sdk().messages.with_raw_response.create(**spec.params, timeout=self._timeout(stream=False))
                state.headers(raw.headers)
                state.body(raw.http_response.content)
        return attempts.result

    @estimate_signature
    def estimate(self, prompt: Prompt, **options: Any) -> Estimate:
        """What the call ``create`` would send costs: input counted by ``count_tokens``, its
        cost, the worst case and the expected cost from the ledger (:mod:`canny.estimate`)."""
        spec = self._estimate_spec(prompt, options)
        with translate():
            raw = self._sdk().messages.with_raw_response.count_tokens(
                **count_body(spec.params), timeout=self._timeout(stream=False)
            )
        return estimated(spec, raw.http_response.content, self._history())

    @property
    def batches(self) -> Batches:
        """Message Batches at half price, reserved and recorded (:mod:`canny.batches`)."""
        if self._batches is None:
            book = BatchBook(self.books, spec_for=self._batch_spec, reserve=self._reserve, offline=self._offline)
            self._batches = Batches(book, self._sdk, timeout=self._timeout(stream=False))
        return self._batches

    @cap_signature
    def session(self, **caps: Any) -> Session:
        """A run of calls (an agent loop) that stops *before* a call could cross a cap."""
        return Session(self, **caps)

    def close(self) -> None:
        if self._sdk_client is not None:
            self._sdk_client.close()
            self._sdk_client = None
        self._close_owned()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_C = TypeVar("_C", bound=ClientBase)


class _Stream(Generic[_C]):
    """What both streams share: the run, the result, and going on after a refusal."""

    def __init__(self, client: _C, run: CallRun, *, on_end: OnEnd | None = None) -> None:
        self._client = client
        self.run = run
        self.result: CallResult | None = None
        self._on_end = on_end
        #: Set it to be told (with the refused result) before a fallback model's text
        #: starts (``fallback_model=``): the CLI ends the refused text's line there.
        self.on_fallback: OnFallback | None = None

    def _ended(self, result: CallResult) -> bool:
        """A run ended with ``result``: keep it, and go on with the fallback call if the
        rule (:func:`canny.fallback.fallback_spec`) says so. ``True`` when the stream ends."""
        self.result = result if self.result is None else merged(self.result, result)
        fallback = fallback_spec(self.run.spec, result)
        if fallback is None:
            return True
        if self.on_fallback is not None:
            self.on_fallback(result)
        announce(result, fallback)
        if self._on_end is not None:
            self._on_end(self.run)
        self.run = self._client._prepare(fallback)
        return False


class MessageStream(_Stream["Client"]):
    """Text chunks of a streamed call, as they arrive. ``result`` is set at the end.

    Leaving the ``with`` block (or :meth:`close`) before the end cancels the call; the
    attempt is recorded as ``cancelled``.
    """

    def __init__(self, client: Client, run: CallRun, *, on_end: OnEnd | None = None) -> None:
        super().__init__(client, run, on_end=on_end)
        self._gen = self._drive()

    def __iter__(self) -> Iterator[str]:
        return self._gen

    @property
    def text_stream(self) -> Iterator[str]:
        return self._gen

    def final(self) -> CallResult:
        """Consume whatever is left and return the result."""
        for _ in self._gen:
            pass
        assert self.result is not None
        return self.result

    def close(self) -> None:
        self._gen.close()
        self.run.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _drive(self) -> Generator[str, None, None]:
        try:
            ended = False
            while not ended:
                attempts = self.run.retrying()
                for attempt in attempts:
                    with attempt as state:
                        yield from self._attempt(state, self._client.retry_policy.clock())
                ended = self._ended(attempts.result)
        finally:
            if self._on_end is not None:
                self._on_end(self.run)

    def _attempt(self, attempt: Attempt, started: float) -> Iterator[str]:
        client, run = self._client, self.run
        api = client._sdk().messages.with_streaming_response
        with api.create(**run.spec.params, stream=True, timeout=client._timeout(stream=True)) as response:
            attempt.headers(response.headers)
            client._idle_timeout(response.http_response, started)
            total = client.timeouts.total
            for event in iter_events(response.http_response.iter_bytes()):
                text = attempt.feed(event)
                if text:
                    yield text
                run.check_deadline(started, total)
            attempt.end_of_stream()


class AsyncClient(ClientBase):
    """The asynchronous twin of :class:`Client` (``async with`` / ``await aclose()``)."""

    _sdk_client: anthropic.AsyncAnthropic | None = None

    def _sdk(self) -> anthropic.AsyncAnthropic:
        import anthropic

        return self._sdk_once(lambda: anthropic.AsyncAnthropic(**self._sdk_kwargs(asynchronous=True)))

    @call_signature
    def stream(self, prompt: Prompt, **options: Any) -> AsyncMessageStream:
        """Start a streamed call; ``async for text in stream`` then ``stream.result``."""
        spec = self._spec(prompt, stream=True, **spec_args(options))
        return self._stream(spec)

    def _stream(self, spec: CallSpec, on_end: OnEnd | None = None) -> AsyncMessageStream:
        return AsyncMessageStream(self, self._prepare(spec), on_end=on_end)

    @call_signature
    async def create(self, prompt: Prompt, **options: Any) -> CallResult:
        """A non-streamed call, retried per the policy."""
        spec = self._spec(prompt, stream=False, **spec_args(options))
        result = await self._create(spec)
        fallback = fallback_spec(spec, result)
        if fallback is None:
            return result
        announce(result, fallback)
        return merged(result, await self._create(fallback))

    async def _create(self, spec: CallSpec) -> CallResult:
        attempts = self._prepare(spec).retrying()
        async for attempt in attempts:
            with attempt as state:
                raw = await self._sdk().messages.with_raw_response.create(
                    **spec.params, timeout=self._timeout(stream=False)
                )
                state.headers(raw.headers)
                state.body(raw.http_response.content)
        return attempts.result

    @estimate_signature
    async def estimate(self, prompt: Prompt, **options: Any) -> Estimate:
        """The async twin of :meth:`Client.estimate`."""
        spec = self._estimate_spec(prompt, options)
        with translate():
            raw = await self._sdk().messages.with_raw_response.count_tokens(
                **count_body(spec.params), timeout=self._timeout(stream=False)
            )
        return estimated(spec, raw.http_response.content, self._history())

    @cap_signature
    def session(self, **caps: Any) -> AsyncSession:
        """The async twin of :meth:`Client.session`."""
        return AsyncSession(self, **caps)

    async def aclose(self) -> None:
        if self._sdk_client is not None:
            await self._sdk_client.close()
            self._sdk_client = None
        self._close_owned()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncMessageStream(_Stream["AsyncClient"]):
    """Async text chunks of a streamed call; ``result`` is set at the end."""

    def __init__(self, client: AsyncClient, run: CallRun, *, on_end: OnEnd | None = None) -> None:
        super().__init__(client, run, on_end=on_end)
        self._gen = self._drive()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._gen

    async def final(self) -> CallResult:
        async for _ in self._gen:
            pass
        assert self.result is not None
        return self.result

    async def aclose(self) -> None:
        await self._gen.aclose()
        self.run.release()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _drive(self) -> AsyncGenerator[str, None]:
        try:
            ended = False
            while not ended:
                attempts = self.run.retrying()
                async for attempt in attempts:
                    with attempt as state:
                        async for text in self._attempt(state, self._client.retry_policy.clock()):
                            yield text
                ended = self._ended(attempts.result)
        finally:
            if self._on_end is not None:
                self._on_end(self.run)

    async def _attempt(self, attempt: Attempt, started: float) -> AsyncIterator[str]:
        client, run = self._client, self.run
        api = client._sdk().messages.with_streaming_response
        async with api.create(**run.spec.params, stream=True, timeout=client._timeout(stream=True)) as response:
            attempt.headers(response.headers)
            client._idle_timeout(response.http_response, started)
            total = client.timeouts.total
            decoder_events = aiter_events(response.http_response.aiter_bytes())
            async for event in decoder_events:
                text = attempt.feed(event)
                if text:
                    yield text
                run.check_deadline(started, total)
            attempt.end_of_stream()
