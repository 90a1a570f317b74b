"""Settings: one documented precedence for every value.

explicit argument > environment > profile in ``config.toml`` > top level of ``config.toml``
> built-in default.

Files live under ``CANNY_HOME`` when it is set (tests and containers use it), otherwise in
the platform's user directories (platformdirs): ``config.toml`` and ``prices.toml`` in the
config dir, ``ledger.db`` in the data dir. ``CANNY_CONFIG`` and ``CANNY_LEDGER`` point at
a config file and a ledger (path or ``postgresql://`` URL) directly.

The model comes from the argument, then ``CANNY_MODEL``, then ``CLAUDE_MODEL``, then the
profile, then the default (:data:`DEFAULT_MODEL`). The API key is resolved separately
(:mod:`canny.secrets`), only when a call needs it.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from canny.errors import ConfigError

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_MODEL",
    "RetrySettings",
    "Settings",
    "Timeouts",
    "check_base_url",
    "config_dir",
    "config_path",
    "data_dir",
    "default_ledger",
    "home_dir",
    "load_settings",
    "parse_money",
    "plain_http_proxy",
]

DEFAULT_MODEL = "claude-sonnet-5-5"
DEFAULT_MAX_TOKENS = 1024
#: Largest dollar amount a budget or a cost cap may name.
MAX_DOLLARS = Decimal(1_000_000_000)
#: Largest ``max_tokens``, ``timeouts.*`` / ``retry.*`` seconds and ``retry.max_attempts``.
MAX_TOKENS_LIMIT = 2**31 - 1
MAX_SECONDS = 10_000_000
MAX_ATTEMPTS = 1000


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. ``connect``: opening a connection; ``first_event``: from sending the request
    to the response headers; ``idle``: the longest gap between two reads of a stream;
    ``total``: one attempt (checked between events; a non-streamed call reads for up to
    this long). See docs/retries.md."""

    connect: float = 10.0
    first_event: float = 120.0
    idle: float = 60.0
    total: float = 900.0


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """Bounds of the one retry loop (see :mod:`canny.retry`)."""

    max_attempts: int = 5
    max_delay: float = 60.0
    deadline: float = 300.0
    initial_delay: float = 0.5


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a call needs except the key. Build with :func:`load_settings`."""

    model: str = DEFAULT_MODEL
    model_source: str = "default"
    max_tokens: int = DEFAULT_MAX_TOKENS
    base_url: str | None = None
    profile: str | None = None
    ledger: str = ""
    log_content: bool = False
    #: OpenTelemetry spans and metrics (``canny[otel]``; see docs/observability.md).
    otel: bool = False
    project: str | None = None
    tags: tuple[str, ...] = ()
    max_cost: Decimal | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: RetrySettings = field(default_factory=RetrySettings)
    #: Budget limits from the profile, as written (``{"day": "5", "month": "100"}``).
    budgets: Mapping[str, Any] = field(default_factory=dict)
    config_file: Path | None = None
    time_zone: str = "UTC"
    #: Prompt caching for calls that do not say (``auto`` or ``off``; see docs/caching.md).
    cache: str = "off"
    #: TTL of the breakpoints ``cache="auto"`` places (``5m`` or ``1h``).
    cache_ttl: str = "5m"


def home_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """``CANNY_HOME`` as a path, or ``None`` when unset."""
    env = os.environ if environ is None else environ
    value = env.get("CANNY_HOME", "").strip()
    return Path(value).expanduser() if value else None


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    home = home_dir(environ)
    if home is not None:
        return home
    import platformdirs

    return Path(platformdirs.user_config_dir("canny"))


def data_dir(environ: Mapping[str, str] | None = None) -> Path:
    home = home_dir(environ)
    if home is not None:
        return home
    import platformdirs

    return Path(platformdirs.user_data_dir("canny"))


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where ``config.toml`` is read from."""
    env = os.environ if environ is None else environ
    explicit = env.get("CANNY_CONFIG", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    return config_dir(env) / "config.toml"


def default_ledger(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    explicit = env.get("CANNY_LEDGER", "").strip()
    if explicit:
        return explicit
    return str(data_dir(env) / "ledger.db")


def check_base_url(url: str) -> str:
    """Refuse to send a key in clear text: plain ``http://`` only to loopback."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"base URL must be an http(s) URL, got {url!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(
            f"refusing to send the API key over plain HTTP to {parts.hostname}",
            hint="use https://, or a loopback address for a local server",
        )
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http_proxy(url: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The proxy a plain ``http://`` base URL would be sent through, if it is on this machine.

    The proxy variables (``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``, either case) are read
    as curl and httpx read them. A proxy on another host would see the key and the prompt
    in clear text, so that route is refused with a :class:`ConfigError` before anything is
    sent. Returns ``None`` for a direct route, and for ``https://`` URLs (their proxies
    tunnel TLS and stay as configured).
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return None
    env = os.environ if environ is None else environ
    proxy, variable = _env_proxy(env)
    if proxy is None or _bypassed(parts.hostname, parts.port or 80, _env_value(env, "no_proxy")[0]):
        return None
    proxy_url = proxy if "://" in proxy else f"http://{proxy}"
    proxy_host = urlsplit(proxy_url).hostname or ""
    if _is_loopback(proxy_host):
        return proxy_url
    shown = proxy_url.partition("://")[0] + "://" + urlsplit(proxy_url).netloc.rpartition("@")[2]  # no credentials
    raise ConfigError(
        f"refusing to send the API key in clear text through the proxy {shown} ({variable}): "
        f"the base URL {url} is plain http",
        hint=f"add {parts.hostname} to NO_PROXY, unset {variable}, or use an https:// base URL",
    )


def _env_value(env: Mapping[str, str], name: str) -> tuple[str, str]:
    """The value of a proxy variable (lower case first, as curl reads it) and its name."""
    for candidate in (name, name.upper()):
        value = env.get(candidate, "").strip()
        if value:
            return value, candidate
    return "", name.upper()


def _env_proxy(env: Mapping[str, str]) -> tuple[str | None, str]:
    for name in ("http_proxy", "all_proxy"):
        if name == "http_proxy" and "REQUEST_METHOD" in env:
            continue  # CGI: HTTP_PROXY may come from a request header (httpoxy)
        value, variable = _env_value(env, name)
        if value:
            return value, variable
    return None, ""


def _bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Does ``NO_PROXY`` exempt ``host``? (``*``, names and domain suffixes, IPs, CIDR)."""
    host = host.strip("[]").lower()
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        if "://" in entry:
            entry = entry.split("://", 1)[1]
        entry = entry.rstrip("/")
        entry_port: int | None = None
        if entry.startswith("["):
            inside, _, rest = entry[1:].partition("]")
            entry = inside
            if rest.startswith(":") and rest[1:].isdigit():
                entry_port = int(rest[1:])
        elif entry.count(":") == 1 and "/" not in entry:
            name, _, maybe_port = entry.partition(":")
            if maybe_port.isdigit():
                entry, entry_port = name, int(maybe_port)
        if entry_port is not None and entry_port != port:
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        entry = entry.removeprefix("*").removeprefix(".")
        if entry and (host == entry or host.endswith("." + entry)):
            return True
    return False


def _read_config(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start} is invalid)", hint=_FIX_FILE) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})", hint=_FIX_FILE) from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML (nested too deeply)", hint=_FIX_FILE) from None


_FIX_FILE = "fix the file or move it aside; its settings are described in docs/configuration.md"


def _check_home(env: Mapping[str, str]) -> None:
    """``CANNY_HOME``, when set, must be a directory canny can read (or not exist yet)."""
    home = home_dir(env)
    if home is None:
        return
    hint = "point CANNY_HOME at a directory canny may read and write, or unset it"
    try:
        is_dir = stat.S_ISDIR(home.stat().st_mode)
    except FileNotFoundError:
        return  # created with the ledger
    except NotADirectoryError:
        raise ConfigError(f"CANNY_HOME {home} cannot be a directory: a part of its path is a file", hint=hint) from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"CANNY_HOME {home} cannot be used ({reason})", hint=hint) from None
    if not is_dir:
        raise ConfigError(f"CANNY_HOME {home} is not a directory", hint=hint)
    try:
        with os.scandir(home):
            pass
    except OSError as exc:
        raise ConfigError(
            f"CANNY_HOME {home} cannot be read ({exc.strerror or type(exc).__name__})", hint=hint
        ) from None


_TIMEOUT_KEYS = {f.name for f in fields(Timeouts)}
_RETRY_KEYS = {f.name for f in fields(RetrySettings)}
_PLAIN_KEYS = {
    "model", "max_tokens", "base_url", "ledger", "log_content", "project", "tags", "max_cost", "time_zone",
    "cache", "cache_ttl", "otel",
}  # fmt: skip
#: Every key a config table may hold (for "did you mean" suggestions).
_TOP_KEYS = {*_PLAIN_KEYS, "timeouts", "retry", "budget", "profiles", "default_profile"}


def _layer(settings: Settings, table: Mapping[str, Any], where: str) -> Settings:
    """Apply one config table (top level or a profile) over ``settings``."""
    changes: dict[str, Any] = {}
    for key, value in table.items():
        if key in ("profiles", "default_profile"):
            continue
        if key == "timeouts":
            changes["timeouts"] = _sub(settings.timeouts, value, _TIMEOUT_KEYS, f"{where}.timeouts")
        elif key == "retry":
            changes["retry"] = _sub(settings.retry, value, _RETRY_KEYS, f"{where}.retry")
        elif key == "budget":
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}.budget must be a table")
            changes["budgets"] = dict(value)
        elif key in _PLAIN_KEYS:
            changes[key] = _coerce(key, value, where)
        else:
            raise ConfigError(f"unknown setting {where}.{key}{_did_you_mean(str(key), _TOP_KEYS)}")
    if "model" in changes:
        changes["model_source"] = f"config ({where})"
    return replace(settings, **changes)


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _in_file(path: Path, layer: Callable[[], Settings]) -> Settings:
    """Run one config layer; its errors name the file and where its settings are described."""
    try:
        return layer()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.message}", hint=exc.hint or _SETTINGS_DOC) from None


_SETTINGS_DOC = "settings are described in docs/configuration.md; `canny config show` prints what is in force"


def _sub(current: Any, value: Any, allowed: set[str], where: str) -> Any:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table")
    unknown = set(value) - allowed
    if unknown:
        first = sorted(unknown)[0]
        raise ConfigError(f"unknown setting {where}.{first}{_did_you_mean(str(first), allowed)}")
    coerced: dict[str, Any] = {}
    for key, item in value.items():
        if key == "max_attempts":
            if not isinstance(item, int) or isinstance(item, bool) or not 1 <= item <= MAX_ATTEMPTS:
                raise ConfigError(f"{where}.{key} must be a positive integer, at most {MAX_ATTEMPTS}")
            coerced[key] = item
            continue
        if not isinstance(item, (int, float)) or isinstance(item, bool) or not 0 < item <= MAX_SECONDS:
            raise ConfigError(f"{where}.{key} must be a positive number of seconds, at most {MAX_SECONDS:,}")
        coerced[key] = float(item)
    return replace(current, **coerced)


def _coerce(key: str, value: Any, where: str) -> Any:
    if key == "max_tokens":
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_TOKENS_LIMIT:
            raise ConfigError(f"{where}.max_tokens must be a positive integer, at most {MAX_TOKENS_LIMIT:,}")
        return value
    if key in ("log_content", "otel"):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}.{key} must be true or false")
        return value
    if key == "tags":
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            raise ConfigError(f"{where}.tags must be a list of strings")
        return tuple(value)
    if key == "max_cost":
        return parse_money(value, f"{where}.max_cost")
    if key == "time_zone":
        return _time_zone(value, f"{where}.time_zone")
    if key == "cache" and value not in ("auto", "off"):
        raise ConfigError(f"{where}.cache must be 'auto' or 'off', not {value!r}")
    if key == "cache_ttl" and value not in ("5m", "1h"):
        raise ConfigError(f"{where}.cache_ttl must be '5m' or '1h', not {value!r}")
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key} must be a string")
    return value


def _time_zone(value: Any, what: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what} must be a time zone name such as 'Europe/Paris'")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{what}: unknown time zone {value!r}") from None
    return value


def parse_money(value: Any, what: str) -> Decimal:
    """A non-negative dollar amount from TOML or the command line (never via float), at
    most :data:`MAX_DOLLARS`: a float (TOML ``0.5``, Python ``0.5``), ``1e999``, ``inf``,
    ``nan`` and negative amounts are a :class:`ConfigError`. Digits past the pico-dollar
    (the ledger's unit) are rounded."""
    if isinstance(value, float):
        raise ConfigError(
            f'{what} must be a string such as "0.25" or a whole number, not the float {_short(value)}',
            hint='canny never reads money through a binary float: quote the amount (TOML: max_cost = "0.25"; '
            'Python: Decimal("0.25") or "0.25")',
        )
    text = str(value).strip().removeprefix("$")
    try:
        amount = Decimal(text) if len(text) <= 100 else None
    except ArithmeticError:  # decimal.InvalidOperation, Overflow ...
        amount = None
    if amount is None or isinstance(value, bool):
        raise ConfigError(f"{what} must be a dollar amount such as 5 or 0.25, got {_short(value)}")
    if not amount.is_finite() or amount < 0 or amount > MAX_DOLLARS:
        limit = f"{MAX_DOLLARS:,}"
        raise ConfigError(f"{what} must be a non-negative dollar amount, at most {limit}, got {_short(value)}")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -12:  # finer than the ledger's pico-dollar
        amount = amount.quantize(_PICO, rounding=ROUND_HALF_EVEN).normalize()
        exponent = amount.as_tuple().exponent
        if isinstance(exponent, int) and exponent > 0:
            amount = amount.quantize(Decimal(1))
    return amount + 0  # -0 becomes 0


_PICO = Decimal("1e-12")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def load_settings(
    *,
    profile: str | None = None,
    model: str | None = None,
    base_url: str | None = None,
    max_tokens: int | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Resolve settings with the documented precedence. Raises :class:`ConfigError`."""
    env = os.environ if environ is None else environ
    _check_home(env)
    path = config_path(env)
    data = _read_config(path)
    settings = Settings(ledger=default_ledger(env), config_file=path if data else None)
    settings = _in_file(path, lambda: _layer(settings, data, "config"))

    chosen = profile or env.get("CANNY_PROFILE", "").strip() or data.get("default_profile")
    if chosen:
        profiles = data.get("profiles", {})
        if not isinstance(chosen, str) or not isinstance(profiles, Mapping) or chosen not in profiles:
            raise ConfigError(
                f"no profile named {chosen!r} in {path}",
                hint="add a [profiles.NAME] table to config.toml, or drop --profile",
            )
        if not isinstance(profiles[chosen], Mapping):
            raise ConfigError(f"profiles.{chosen} in {path} must be a table")
        base = settings
        settings = _in_file(path, lambda: _layer(base, profiles[chosen], f"profiles.{chosen}"))
        settings = replace(settings, profile=str(chosen))

    for var in ("CLAUDE_MODEL", "CANNY_MODEL"):  # later wins: CANNY_MODEL beats CLAUDE_MODEL
        value = env.get(var, "").strip()
        if value:
            settings = replace(settings, model=value, model_source=var)
    otel = env.get("CANNY_OTEL", "").strip().lower()
    if otel:
        if otel not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ConfigError(f"CANNY_OTEL must be 1 or 0, not {otel!r}")
        settings = replace(settings, otel=otel in ("1", "true", "yes", "on"))
    env_url = env.get("ANTHROPIC_BASE_URL", "").strip()
    if env_url:
        settings = replace(settings, base_url=env_url)

    if model:
        settings = replace(settings, model=model, model_source="argument")
    if base_url:
        settings = replace(settings, base_url=base_url)
    if max_tokens is not None:
        if not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
            raise ConfigError(f"max_tokens must be a positive integer, at most {MAX_TOKENS_LIMIT:,}")
        settings = replace(settings, max_tokens=max_tokens)
    known = {f.name for f in fields(Settings)}
    bad = set(overrides) - known
    if bad:
        raise TypeError(f"unknown setting {sorted(bad)[0]!r}")
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    if settings.base_url:
        settings = replace(settings, base_url=check_base_url(settings.base_url))
    return settings
