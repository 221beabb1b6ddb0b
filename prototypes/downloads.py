"""Serving stored files as downloads: one function for every artifact download route — the store's
pages, share links and install routes, and the API (here, so prototypes/api.py uses it without
importing store).

A download streams in constant memory whatever the file's size and wherever it is stored:
- Under ASGI (uvicorn, daphne) the body is an *async* iterator. Django consumes a synchronous one, such
  as a plain FileResponse's, into a list before sending a byte — the whole file in memory.
- On S3-compatible storage the bytes come from a ranged GET streamed chunk by chunk; django-storages'
  own file object would first copy the whole object into a temporary file (or memory).
- A single HTTP range (`bytes=a-b`, `bytes=a-`, `bytes=-n`) is answered with 206, so interrupted
  downloads resume; anything else in a Range header (several ranges, bad syntax) gets the whole file,
  as RFC 9110 allows. A range that starts past the end gets 416.
- With DOWNLOAD_ACCEL_REDIRECT set and files on the local file system, the body is left to nginx
  (X-Accel-Redirect, see docs/deploy.md), which also answers ranges itself.
"""

from __future__ import annotations

import asyncio
import re
from urllib.parse import quote

from django.conf import settings
from django.core.files.storage import FileSystemStorage
from django.core.handlers.asgi import ASGIRequest
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.utils.http import content_disposition_header

CHUNK = 256 * 1024
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def serve_file(request, fieldfile, *, filename: str, content_type: str, as_attachment: bool = True):
    """The stored file as a response to `request`: whole (200), one range of it (206), no part of it
    (416), or an X-Accel-Redirect for nginx. The caller has checked who may have it."""
    storage = fieldfile.storage
    prefix = settings.DOWNLOAD_ACCEL_REDIRECT
    if prefix and isinstance(storage, FileSystemStorage):
        response = HttpResponse(content_type=content_type)
        response["X-Accel-Redirect"] = prefix.rstrip("/") + "/" + quote(fieldfile.name)
        _describe(response, filename, as_attachment)
        return response

    try:
        size = fieldfile.size
    except Exception:
        if fieldfile.storage.exists(fieldfile.name):
            raise
        raise Http404("This file is no longer stored.") from None
    wanted = parse_range(request.headers.get("Range", ""), size)
    if wanted is None:
        start, end, status = 0, size - 1, 200
    elif wanted == "unsatisfiable":
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        response["Accept-Ranges"] = "bytes"
        return response
    else:
        (start, end), status = wanted, 206
    length = end - start + 1

    if request.method == "HEAD" or length <= 0:
        response = HttpResponse(content_type=content_type, status=status)
    else:
        reader = open_range(fieldfile, start, length)
        body = _read_async(reader) if isinstance(request, ASGIRequest) else _read(reader)
        response = StreamingHttpResponse(body, content_type=content_type, status=status)
        response._resource_closers.append(reader.close)  # also when the client goes away mid-download
    response["Content-Length"] = str(max(length, 0))
    response["Accept-Ranges"] = "bytes"
    if status == 206:
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    _describe(response, filename, as_attachment)
    return response


def parse_range(header: str, size: int):
    """(first, last) byte of the one range asked for, clipped to the file; None to send the whole file
    (no header, several ranges, or one that does not parse); "unsatisfiable" when it lies past the end."""
    match = RANGE.match(header.strip().replace(" ", ""))
    if not match or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":  # the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(size - n, 0), size - 1
    start = int(first)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, size - 1 if last == "" else min(int(last), size - 1)


class _Slice:
    """At most `length` bytes from a readable stream, then end of file."""

    def __init__(self, stream, length: int):
        self.stream = stream
        self.left = length

    def read(self, size: int = CHUNK) -> bytes:
        if self.left <= 0:
            return b""
        data = self.stream.read(min(size, self.left))
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.stream.close()


def open_range(fieldfile, start: int, length: int) -> _Slice:
    """A reader of `length` bytes of the stored file from `start`, holding at most one chunk in memory."""
    storage = fieldfile.storage
    if _is_s3(storage):
        # The storage's key for the name, as S3Storage._open computes it.
        from storages.utils import clean_name

        key = storage._normalize_name(clean_name(fieldfile.name))
        obj = storage.connection.meta.client.get_object(
            Bucket=storage.bucket_name, Key=key, Range=f"bytes={start}-{start + length - 1}"
        )
        return _Slice(obj["Body"], length)
    stream = storage.open(fieldfile.name, "rb")
    stream.seek(start)
    return _Slice(stream, length)


def _is_s3(storage) -> bool:
    if not storage.__class__.__module__.startswith("storages."):
        return False  # not django-storages: no need to import boto3
    from storages.backends.s3 import S3Storage

    return isinstance(storage, S3Storage)


def _read(reader: _Slice):
    try:
        while chunk := reader.read(CHUNK):
            yield chunk
    finally:
        reader.close()


async def _read_async(reader: _Slice):
    # Each read runs in a worker thread, so the event loop keeps serving other requests meanwhile,
    # and the server's flow control (uvicorn waits for the socket to drain) paces the reads.
    try:
        while chunk := await asyncio.to_thread(reader.read, CHUNK):
            yield chunk
    finally:
        reader.close()


def _describe(response, filename: str, as_attachment: bool) -> None:
    disposition = content_disposition_header(as_attachment, filename)
    if disposition:
        response["Content-Disposition"] = disposition
