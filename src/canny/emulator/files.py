"""The Files API: ``/v1/files`` (upload, list, retrieve metadata, download, delete).

Files are held in memory for the life of the server. An upload is ``multipart/form-data``
with a ``file`` part (and an optional ``expires_in_seconds`` field, 3600 to 7776000); the
emulator keeps the final path component of its filename and its bytes, and takes the MIME
type from the part's ``Content-Type`` (or the filename's extension when that is
``application/octet-stream`` or absent).

As documented, files you upload are not downloadable (``downloadable: false``; the API
serves only files that skills or code execution created): downloading one is a 400.
A scenario with ``files_downloadable = true`` makes uploads downloadable, so a client's
download path can be tested. The store is bounded (:data:`MAX_STORE_BYTES` in all).
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import mimetypes
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from canny.emulator.batches import Handler, Route3, api_id, iso, page_limit, paginate, resource_routes, service_handler
from canny.emulator.fields import ApiError
from canny.emulator.fields import invalid as _invalid
from canny.emulator.responses import json_script
from canny.emulator.wire import Body, Start, Step

if TYPE_CHECKING:
    from canny.emulator.app import EmulatorState

__all__ = ["MAX_FILE_BYTES", "MAX_STORE_BYTES", "FileService"]

#: The Files API's size limit for one file.
MAX_FILE_BYTES = 500 * 1024 * 1024
#: What the emulator holds in all (it is in memory): an upload past this is a 413.
MAX_STORE_BYTES = 1024 * 1024 * 1024
_MIN_EXPIRY, _MAX_EXPIRY = 3600, 7_776_000
_OCTET = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class _File:
    id: str
    filename: str
    mime_type: str
    data: bytes
    created: float
    downloadable: bool
    expires: float | None

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "id": self.id,
            "type": "file",
            "filename": self.filename,
            "mime_type": self.mime_type,
            "size_bytes": len(self.data),
            "created_at": iso(self.created),
            "downloadable": self.downloadable,
        }
        if self.expires is not None:
            meta["expires_at"] = iso(self.expires)
        return meta


class FileService:
    """The file store and its route handlers, bound to one emulator state."""

    def __init__(self, state: EmulatorState, *, clock: Callable[[], float] = time.time) -> None:
        self._state = state
        self._clock = clock
        self._lock = threading.Lock()
        self._files: dict[str, _File] = {}

    def routes(self) -> list[Route3]:
        """The routes this service answers."""
        handlers = (self.upload, self.listing, self.retrieve, self.delete)
        return resource_routes("/v1/files", "file_id", self._wrap, handlers, {"content": ("GET", self.download)})

    def _wrap(self, method: Callable[[Request, str, bytes], list[Step]]) -> Handler:
        def call(request: Request, request_id: str, raw: bytes, _body: object) -> list[Step]:
            return method(request, request_id, raw)  # the Files API's bodies are not JSON

        return service_handler(self._state, call, json_body=False)

    def upload(self, request: Request, request_id: str, raw: bytes) -> list[Step]:
        """``POST /v1/files`` (multipart/form-data)."""
        if len(raw) > MAX_FILE_BYTES:
            raise ApiError(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.")
        fields = _multipart(request.headers.get("content-type", ""), raw)
        if "file" not in fields:
            raise _invalid("file: Field required")
        filename, content_type, data = fields["file"]
        expires = None
        if "expires_in_seconds" in fields:
            text = fields["expires_in_seconds"][2].decode("utf-8", "replace").strip()
            if not text.isdigit() or not _MIN_EXPIRY <= int(text) <= _MAX_EXPIRY:
                raise _invalid(f"expires_in_seconds: Input should be between {_MIN_EXPIRY} and {_MAX_EXPIRY}")
            expires = int(text)
        for name in fields:
            if name not in ("file", "expires_in_seconds"):
                raise _invalid(f"{name}: Extra inputs are not permitted")
        mime = _mime(filename, content_type)
        name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
        if not name:
            name = "unnamed" + (mimetypes.guess_extension(mime) or "")
        now = self._clock()
        downloadable = self._state.scenario.files_downloadable
        stored = _File(api_id("file_"), name, mime, data, now, downloadable, None if expires is None else now + expires)
        with self._lock:
            held = sum(len(f.data) for f in self._files.values())
            if held + len(data) > MAX_STORE_BYTES:
                raise ApiError(
                    413,
                    "request_too_large",
                    f"The emulator holds at most {MAX_STORE_BYTES} bytes of files; delete some.",
                )
            self._files[stored.id] = stored
        return json_script(200, stored.metadata(), request_id)

    def listing(self, request: Request, request_id: str, raw: bytes) -> list[Step]:
        """``GET /v1/files``: newest first, by ``page`` cursor or ``after_id`` / ``before_id``."""
        params = request.query_params
        now = self._clock()
        with self._lock:
            files = sorted(
                (f for f in self._files.values() if f.expires is None or f.expires > now),
                key=lambda f: f.created,
                reverse=True,
            )
        if "scope_id" in params:
            files = []  # uploads belong to no session scope
        wanted = [v for key in ("ids", "ids[]") for raw_ids in params.getlist(key) for v in raw_ids.split(",") if v]
        if wanted:
            page = [f.id for f in files if f.id in set(wanted)]
            has_more = False
        else:
            limit = page_limit(request)
            query = dict(params)
            cursor = query.pop("page", "")
            if cursor:
                if not cursor.startswith("page_"):
                    raise _invalid("page: Invalid page cursor")
                query["after_id"] = cursor.removeprefix("page_")
            page, has_more = paginate([f.id for f in files], query, limit)
        by_id = {f.id: f for f in files}
        payload = {
            "data": [by_id[i].metadata() for i in page],
            "has_more": has_more,
            "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None,
            "next_page": f"page_{page[-1]}" if has_more and page else None,
        }
        return json_script(200, payload, request_id)

    def retrieve(self, request: Request, request_id: str, raw: bytes) -> list[Step]:
        """``GET /v1/files/{id}``: the metadata."""
        return json_script(200, self._get(request).metadata(), request_id)

    def delete(self, request: Request, request_id: str, raw: bytes) -> list[Step]:
        """``DELETE /v1/files/{id}``."""
        stored = self._get(request)
        with self._lock:
            self._files.pop(stored.id, None)
        return json_script(200, {"id": stored.id, "type": "file_deleted"}, request_id)

    def download(self, request: Request, request_id: str, raw: bytes) -> list[Step]:
        """``GET /v1/files/{id}/content``: the bytes, if the file is downloadable."""
        stored = self._get(request)
        if not stored.downloadable:
            raise _invalid(f"File {stored.id} is not downloadable: only files created by skills or code execution are.")
        headers = (
            ("content-type", stored.mime_type),
            ("content-length", str(len(stored.data))),
            ("request-id", request_id),
        )
        return [Start(200, headers), Body(stored.data)]

    def _get(self, request: Request) -> _File:
        file_id = request.path_params["file_id"]
        with self._lock:
            stored = self._files.get(file_id)
        if stored is None or (stored.expires is not None and stored.expires <= self._clock()):
            raise ApiError(404, "not_found_error", f"File not found: {file_id}")
        return stored


def _mime(filename: str | None, content_type: str | None) -> str:
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime and mime != _OCTET:
        return mime
    guessed, _ = mimetypes.guess_type(filename or "")
    return guessed or _OCTET


def _multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, str | None, bytes]]:
    """The fields of a ``multipart/form-data`` body: name -> (filename, content type, bytes)."""
    header = email.message.Message()
    header["content-type"] = content_type
    if header.get_content_type() != "multipart/form-data":
        raise _invalid("Content-Type must be multipart/form-data with a 'file' part")
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise _invalid("multipart/form-data body has no boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = raw.split(delimiter)
    if len(chunks) < 3:
        raise _invalid("There was an error parsing the multipart/form-data body of your request.")
    fields: dict[str, tuple[str | None, str | None, bytes]] = {}
    parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
    for raw_part in chunks[1:-1]:
        head, sep, data = raw_part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            raise _invalid("There was an error parsing the multipart/form-data body of your request.")
        part = parser.parsebytes(head + b"\r\n\r\n")
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        filename = part.get_filename()
        fields[name] = (filename, part.get("content-type"), data.removesuffix(b"\r\n"))
    return fields
