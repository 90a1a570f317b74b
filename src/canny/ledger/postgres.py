"""The shared ledger: PostgreSQL through psycopg 3, for a team or many machines.

``PostgresLedger("postgresql://user:password@host:5432/db")`` connects, applies the
ledger's migrations (serialised across machines by an advisory lock) and stores one row per
attempt, each ``record()`` in one transaction. psycopg is imported here only, so the rest
of canny never needs it (``pip install 'canny[postgres]'``).

Every connection uses the UTF8 client encoding, whatever the server's encoding: in a
``SQL_ASCII`` database (``initdb`` in the C locale) text is stored as the UTF-8 bytes
canny sends and read back as text; in another encoding the server converts (and refuses,
with a clear error, a character that encoding cannot hold).

The password never leaves this module in clear: :attr:`location` masks it, and error
messages are scrubbed of it. Prefer a password file (``~/.pgpass``) or ``PGPASSWORD`` and a
URL without one; libpq reads both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import count
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from canny.errors import LedgerError
from canny.ledger._sql import Pool, SQLLedger
from canny.ledger.migrations import Dialect

if TYPE_CHECKING:
    import psycopg

    from canny.ledger.writer import Op

__all__ = ["PostgresLedger", "copy_text", "mask_url"]

_MASK = "****"
#: Bytes of COPY output gathered before a chunk of the export is handed on.
_COPY_BATCH = 1 << 22
_cursor_names = count()


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``****`` (URL userinfo, ``?password=`` or a
    ``password=`` conninfo pair)."""
    if "://" not in url:
        return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", rf"\g<1>{_MASK}", url, flags=re.IGNORECASE)
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{_MASK}@{hostinfo}"
    query = parts.query
    if "password" in query.lower():
        pairs = [(k, _MASK if k.lower() == "password" else v) for k, v in parse_qsl(query, keep_blank_values=True)]
        query = urlencode(pairs, safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(url: str) -> list[str]:
    """The password(s) in ``url``, to scrub from error text."""
    found: list[str] = []
    if "://" in url:
        parts = urlsplit(url)
        if parts.password:
            found.append(parts.password)
        found += [v for k, v in parse_qsl(parts.query) if k.lower() == "password" and v]
    else:
        found += [m.group(1).strip("'") for m in re.finditer(r"password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", url, re.I)]
    return sorted({s for s in found if s}, key=len, reverse=True)


def _steps(kind: str, values: Sequence[Any]) -> list[tuple[str, tuple[Any, ...]]]:
    """The statements of one queued operation (:func:`canny.ledger._sql.op_values`), none
    of which needs the result of another: what :func:`canny.ledger._sql._apply` does, with
    a ``lost`` row giving way before the insert rather than after a failed one, and the
    tags inserted by the statement that inserts the row."""
    from canny.ledger._sql import _FORGET, _INFLIGHT_INSERT, _INSERT, _OUTCOME, _TAGS

    if kind == "begin":
        return [(_INFLIGHT_INSERT, tuple(values))]
    if kind == "forget":
        return [(_FORGET, tuple(values))]
    call_id, attempt = values[0], values[1]
    tags = list(dict.fromkeys(json.loads(values[_TAGS] or "[]")))
    return [
        (_FORGET, (call_id, attempt)),
        (_LOST, (call_id, attempt, values[_OUTCOME])),
        (f"WITH ins AS ({_INSERT}) {_INSERT_TAGS}", (*values, call_id, tags)),
    ]


#: A ``lost`` row gives way to the real row of its attempt (swept while its process ran).
_LOST = "DELETE FROM attempts WHERE call_id = ? AND attempt = ? AND outcome = 'lost' AND ? <> 'lost'"
#: The tags of the row just inserted (none when the attempt already had its row).
_INSERT_TAGS = (
    "INSERT INTO attempt_tags (tag, attempt_id) SELECT DISTINCT tag, ins.id FROM ins, "
    "unnest(CAST(? AS text[])) AS tag ON CONFLICT DO NOTHING"
)


class _Tx:
    """A :class:`canny.ledger.migrations.Transaction` over one psycopg connection."""

    dialect: Dialect = "postgres"

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("%", "%%").replace("?", "%s")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._conn.cursor() as cursor:
            cursor.execute(self._sql(sql), tuple(params))
            return cursor.fetchall() if cursor.description is not None else []

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self._conn.cursor() as cursor:
                cursor.executemany(self._sql(sql), [tuple(r) for r in rows])

    def script(self, sql: str) -> None:
        self._conn.execute(sql.encode())  # no parameters: several statements are allowed


class PostgresLedger(SQLLedger):
    """The ledger in a PostgreSQL database at ``url`` (migrated on open)."""

    dialect: Dialect = "postgres"

    def __init__(self, url: str, *, connect_timeout: int = 10) -> None:
        self._url = url
        self._url_secrets = url_secrets(url)
        self.location = mask_url(url)
        self._connect_timeout = connect_timeout
        try:
            import psycopg
        except ImportError as exc:
            raise LedgerError("a PostgreSQL ledger needs psycopg", hint="pip install 'canny[postgres]'") from exc
        self._psycopg = psycopg
        self._pool: Pool[psycopg.Connection[Any]] = Pool(self._connect, _close)
        try:
            self.migrate()
            self.sweep_on_open()
        except BaseException:
            self._pool.close()
            raise

    def _scrub(self, text: str) -> str:
        for secret in self._url_secrets:
            text = text.replace(secret, _MASK)
        return text

    def _error(self, exc: BaseException) -> LedgerError:
        text = " ".join(str(exc).split()) or type(exc).__name__
        hint = None
        if isinstance(exc, self._psycopg.OperationalError):
            hint = "check the URL in CANNY_LEDGER, that the server is running, and the credentials"
        return LedgerError(f"ledger {self.location}: {self._scrub(text)}", hint=hint)

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            # UTF8 whatever the server encoding: canny's text (tags, projects, prompts) is
            # Unicode, and a SQL_ASCII database would otherwise hand back bytes.
            return self._psycopg.connect(
                self._url,
                autocommit=True,
                connect_timeout=self._connect_timeout,
                application_name="canny",
                client_encoding="UTF8",
            )
        except self._psycopg.Error as exc:
            raise self._error(exc) from None

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[_Tx]:
        """One transaction; committed on normal exit, rolled back on error."""
        with self._holding() if write else self._reading(), self._pool.connection() as conn:
            try:
                with conn.transaction():
                    yield _Tx(conn)
            except self._psycopg.Error as exc:
                raise self._error(exc) from None

    def write_all(self, ops: Sequence[Op]) -> bool:
        """Write a writer's batch in one round trip (psycopg's pipeline mode), each
        operation still in a transaction of its own: a row's triggers lock its rollup rows
        table by table, and transactions of one row each cannot deadlock. One round trip
        also means the writer thread takes Python's interpreter lock back once, not once
        per statement (:mod:`canny.ledger._batch_sqlite` says why that matters).
        ``False`` where pipelines are not supported. A failure raises after the
        operations before it were committed; the writer then writes the batch again one
        operation at a time, which each operation allows (written twice, it changes
        nothing the second time)."""
        from canny.ledger._sql import op_values

        if not self._psycopg.Pipeline.is_supported():
            return False
        with self._holding(), self._pool.connection() as conn:
            try:
                with conn.pipeline():
                    for op in ops:
                        values = op_values(op)
                        if values is not None:
                            conn.execute("BEGIN")
                            for sql, params in _steps(op.kind, values):
                                conn.execute(_Tx._sql(sql), params)
                            conn.execute("COMMIT")
            except self._psycopg.Error as exc:
                raise self._error(exc) from None
        return True

    def _write_one(self, sql: str, params: Sequence[Any]) -> None:
        with self._pool.connection() as conn:
            try:
                conn.execute(_Tx._sql(sql), tuple(params))  # autocommit: one round trip
            except self._psycopg.Error as exc:
                raise self._error(exc) from None

    def statement(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on its own (autocommit: atomic by itself, one round trip, no
        ``BEGIN``/``COMMIT``) and return its rows: the budget functions' hot path, which
        reads no attempt rows, so it does not wait for the writer."""
        with self._pool.connection() as conn:
            try:
                with conn.cursor() as cursor:
                    cursor.execute(_Tx._sql(sql), tuple(params))
                    return cursor.fetchall() if cursor.description is not None else []
            except self._psycopg.Error as exc:
                raise self._error(exc) from None

    def _stream(self, sql: str, params: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        self._await_writes()
        with self._pool.connection() as conn:
            try:
                with conn.transaction(), conn.cursor(name=f"canny_scan_{next(_cursor_names)}") as cursor:
                    cursor.itersize = 2000
                    cursor.execute(_Tx._sql(sql), tuple(params))
                    yield from cursor
            except self._psycopg.Error as exc:
                raise self._error(exc) from None

    def _export_lines(
        self, head: bytes, line: str, where: str, params: Sequence[Any], *, text: bool
    ) -> Iterator[bytes]:
        """One ``COPY (SELECT line ...) TO STDOUT``: the server streams the lines as it makes
        them, about 4 MiB at a time handed on, with COPY's text-format escapes undone."""
        self._await_writes()
        if head:
            yield head
        where = f" WHERE {where}" if where else ""
        select = f"SELECT {line} FROM attempts{where} ORDER BY started_at_us, id"  # noqa: S608 (SQL of constants)
        with self._pool.connection() as conn:
            try:
                copy_sql = f"COPY ({select}) TO STDOUT"
                # psycopg fills in the parameters only if there are any (and then wants %% for %).
                statement, values = (_Tx._sql(copy_sql), list(params)) if params else (copy_sql, None)
                with conn.cursor() as cursor, cursor.copy(statement, values) as copy:
                    batch: list[bytes] = []
                    size = 0
                    for data in copy:
                        batch.append(bytes(data))
                        size += len(data)
                        if size >= _COPY_BATCH:
                            yield copy_text(b"".join(batch))
                            batch, size = [], 0
                    if batch:
                        yield copy_text(b"".join(batch))
            except self._psycopg.Error as exc:
                raise self._error(exc) from None

    def close(self) -> None:
        """Write what the writer holds, run the close hooks, then close every pooled
        connection; further use raises :class:`LedgerError`."""
        self._stop()
        self._pool.close()


#: COPY's text-format escapes of the bytes a line can hold (it never writes others).
_COPY_ESCAPES = ((b"\\b", b"\b"), (b"\\f", b"\f"), (b"\\n", b"\n"), (b"\\r", b"\r"), (b"\\t", b"\t"), (b"\\v", b"\v"))


def copy_text(data: bytes) -> bytes:
    """Whole rows of one text column as ``COPY ... TO STDOUT`` (text format) writes them,
    unescaped: each backslash there starts a pair, so split at the escaped backslashes
    (left to right, as the pairs run) and undo the other pairs within each part."""
    if b"\\" not in data:
        return data
    parts = data.split(b"\\\\")
    for i, part in enumerate(parts):
        if b"\\" in part:
            for escape, byte in _COPY_ESCAPES:
                parts[i] = parts[i].replace(escape, byte)
    return b"\\".join(parts)


def _close(conn: psycopg.Connection[Any]) -> None:
    conn.close()
