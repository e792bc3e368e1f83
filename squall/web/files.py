"""``POST /api/files`` (uploads) and ``GET /files/<sha256>.<ext>`` (serving).

Theory of operation. An upload's body is never held in memory: Tornado hands
:class:`UploadHandler` (``@stream_request_body``) each chunk as it arrives; the
chunk is hashed, written to a temporary file in ``<data_dir>/files/tmp`` and
dropped. Limits are checked before a byte is read (``Content-Length`` against
``upload_max_bytes`` and the user's quota; the user's uploads in flight and per
second) and again as bytes come (a chunked body has no length to check). A
body refused while streaming is read on and dropped, up to
:data:`DRAIN_BYTES` more, so that the client is reading when the ``413``
arrives; past that the connection is closed after the answer.

Once the body is in, the type is read from its first bytes
(:func:`squall.files.sniff`). An image is decoded and written again by Pillow
in a worker process (:attr:`Files.pool`): the loop only waits for a future, so
a 50 MiB upload costs other clients' messages nothing but socket reads. Other
files are moved into place under their SHA-256 as streamed.

Who may fetch a file is decided in one place, :meth:`Files.may_fetch`: its
uploaders, and readers of a room it was posted to (:meth:`Files.may_read_room`,
the hook for private rooms). Anyone else gets the same ``404`` as for a file
that does not exist.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import multiprocessing
import os
import secrets
import time
from collections.abc import Awaitable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tornado.web

from ..config import Settings
from ..errors import BadRequest, ClientError, Forbidden, NotFound, RateLimited, Rejected, TooLarge, Unauthorized
from ..files import (
    FILE_NAME, IMAGE_TYPES, MAX_SNIFF_BYTES, OCTET_STREAM, OTHER_TYPES, FileRecord, ImageRefused, ImageResult,
    clean_name,
    extension_of, new_file_id, reencode_image, sniff, stored_path, type_of_extension,
)
from ..limits import Rate, RateTable
from ..protocol import nick_key
from ..store import Store
from .base import BaseHandler, JSONErrors, query_argument, token_from_request

if TYPE_CHECKING:
    from .access import Access
    from .node import WebNode

__all__ = ["Files", "UploadHandler", "FileHandler", "DRAIN_BYTES"]

log = logging.getLogger("squall.web")

# Bytes of a refused body still read (and dropped) so that the client reads
# the 413: a server that closes with unread bytes in its socket sends a TCP
# reset, and the client's stack may throw the answer away with it.
DRAIN_BYTES = 1024 * 1024
# How long an upload's body may take: Tornado's body_timeout (idle_timeout,
# 75 s) is for chat requests, not 25 MiB over a slow phone link.
UPLOAD_BODY_TIMEOUT = 15 * 60.0
# Seconds one image may take to re-encode: a 40 Mpx photo takes a few; past
# this the worker is presumed stuck on a hostile file.
REENCODE_TIMEOUT = 60.0
# An upload's bytes written between two fdatasync calls (in the writer thread).
SYNC_EVERY_BYTES = 4 * 1024 * 1024
# How much lower than the web node the re-encoding workers run (nice(2) steps).
WORKER_NICENESS = 10


class Files:
    """The web node's uploads: where they live, their limits, who may fetch them.

    :param settings: ``data_dir`` and the ``upload_*`` settings.
    :param store: the ``files`` table.
    """

    def __init__(self, settings: Settings, store: Store, access: Access | None = None) -> None:
        self.settings = settings
        self.store = store
        self.access = access  # rooms' readers (None: every room readable, as in tests of files alone)
        self.root = Path(settings.data_dir).resolve() / "files"
        self.tmp = self.root / "tmp"
        self.rate = RateTable(
            Rate("upload_per_user", settings.upload_rate, settings.upload_burst, "uploads", "per user"),
            max_keys=settings.max_rate_keys,
        )
        self.uploading: dict[str, int] = {}  # uploads in flight, by nick key
        self._pool: ProcessPoolExecutor | None = None
        # Hashes and writes upload chunks (UploadHandler._take); one per upload
        # the node takes at once would be more threads than cores to run them.
        self.writer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="squall-upload")

    @property
    def pool(self) -> ProcessPoolExecutor:
        """The processes that re-encode images (started at first use)."""
        if self._pool is None:
            # spawn, not fork: the web node has threads (SQLite's writer), and a
            # forked child would inherit their locks mid-flight.
            self._pool = ProcessPoolExecutor(
                max_workers=self.settings.upload_workers, mp_context=multiprocessing.get_context("spawn"),
                # Re-encoding is background work: chat (this loop, the processor) gets the cores first.
                initializer=os.nice, initargs=(WORKER_NICENESS,),
            )
        return self._pool

    async def reencode(self, source: Path, kind: str) -> ImageResult:
        """:func:`~squall.files.reencode_image` in :attr:`pool`; its refusals as client errors."""
        work = functools.partial(
            reencode_image, str(source), str(self.root), kind, max_pixels=self.settings.upload_max_pixels
        )
        try:
            return await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(self.pool, work), REENCODE_TIMEOUT
            )
        except ImageRefused as exc:
            refusal = TooLarge if exc.code == "too_many_pixels" else BadRequest
            raise refusal(exc.reason, code=exc.code) from None
        except (BrokenProcessPool, TimeoutError):
            # A worker died in the decoder (a crash, the OOM killer) or took too
            # long: refuse this image and start fresh workers for the next.
            log.warning("re-encoding an upload failed in the worker (%s); restarting the workers", kind)
            self.close_pool()
            raise BadRequest("image could not be decoded (the decoder gave up)", code="bad_image") from None

    def close_pool(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=False, cancel_futures=True)
            for process in list(getattr(pool, "_processes", {}).values()):
                process.kill()  # one stuck in a decoder would otherwise run on

    def close(self) -> None:
        self.writer.shutdown(wait=False)
        self.close_pool()

    def sweep(self, *, now: float) -> None:
        self.rate.sweep(now=now)

    # -- access: the one place -------------------------------------------

    async def may_fetch(self, sha256: str, key: str) -> bool:
        """Whether user ``key`` may fetch stored content ``sha256`` (or its thumbnail):
        they uploaded it, or it was posted to a room they may read."""
        owners, rooms = await self.store.file_access(sha256)
        if key in owners:
            return True
        for room in rooms:
            if await self.may_read_room(room, key):
                return True
        return False

    async def may_read_room(self, room: str, key: str) -> bool:
        """Whether ``key`` may read ``room``'s messages: the node's access check
        (:meth:`squall.web.access.Access.may_read`), which says no by raising."""
        if self.access is None:
            return True
        try:
            await self.access.may_read(room, key)
        except Forbidden:
            return False
        return True

    # -- attachments -----------------------------------------------------

    async def attachments(self, owner: str, room: str, ids: Sequence[str]) -> tuple[dict[str, Any], ...]:
        """The attachment objects of files ``ids``, each of which ``owner`` must
        have uploaded (else ``bad_attachment``); ``room``'s readers may fetch
        them from now on."""
        found = {record.id: record for record in await self.store.files_of(owner, ids)}
        for file_id in ids:
            if file_id not in found:
                # The same answer for someone else's file as for none at all.
                raise Rejected(f"attachment {file_id!r} is not a file you uploaded", code="bad_attachment")
        await self.store.share_files(room, [record.sha256 for record in found.values()])
        return tuple(found[file_id].to_wire() for file_id in ids)

    # -- limits ------------------------------------------------------------

    def start_upload(self, key: str, *, now: float) -> None:
        """Count an upload by ``key`` in, or raise ``RateLimited``; call :meth:`end_upload` after."""
        limit = self.settings.upload_concurrency
        if self.uploading.get(key, 0) >= limit:
            raise RateLimited(
                f"at most {limit} uploads at once per user; wait for one to finish",
                retry_after=1.0, limit="upload_concurrency",
            )
        bucket = self.rate.bucket(key, now=now)
        if not bucket.ready():
            raise self.rate.rate.refusal(bucket.retry_after())
        bucket.spend()
        self.uploading[key] = self.uploading.get(key, 0) + 1

    def end_upload(self, key: str) -> None:
        left = self.uploading.get(key, 0) - 1
        if left > 0:
            self.uploading[key] = left
        else:
            self.uploading.pop(key, None)

    def too_large(self, size: int | str) -> TooLarge:
        limit = self.settings.upload_max_bytes
        return TooLarge(f"upload has {size} bytes, more than the limit of {limit} bytes", code="too_large")

    def over_quota(self, used: int, size: int | str) -> TooLarge:
        quota = self.settings.upload_quota_bytes
        return TooLarge(
            f"upload of {size} bytes would bring your files to more than your quota of {quota} bytes"
            f" ({used} bytes used)", code="quota_exceeded",
        )


@tornado.web.stream_request_body
class UploadHandler(BaseHandler):
    """``POST /api/files?name=N``: the body is the file's bytes. Answers ``201``
    with the file's attachment object (``id`` to put in a send's ``attachments``)."""

    def initialize(self, node: WebNode) -> None:
        super().initialize(node)
        self.files = node.files
        self._key: str | None = None  # the uploader, once counted in
        self._fd: int | None = None
        self._tmp: Path | None = None
        self._hash = hashlib.sha256()
        self._head = bytearray()
        self._received = 0
        self._used = 0
        self._refused: ClientError | None = None
        self._drained = 0
        self._pending: asyncio.Future[None] | None = None  # the chunk being hashed and written
        self._unsynced = 0  # bytes written since the last fdatasync

    def body_limit(self) -> int:
        return self.node.settings.upload_max_bytes

    async def prepare(self) -> None:
        await super().prepare()  # host, Content-Length against body_limit(), session
        key = nick_key(self.current_nick())
        if self.request.method != "POST":
            return
        settings = self.node.settings
        length = self.request.headers.get("Content-Length")
        self._used = await self.files.store.upload_bytes(key)
        if length is not None and length.isdigit() and self._used + int(length) > settings.upload_quota_bytes:
            raise self.files.over_quota(self._used, length)
        self.files.start_upload(key, now=time.monotonic())
        self._key = key
        connection = self.request.connection
        # Tornado's own bound, above ours: a chunked body over it is cut off
        # without an answer, so ours (and the drain) must come first.
        connection.set_max_body_size(settings.upload_max_bytes + DRAIN_BYTES + 1)  # type: ignore[union-attr]
        connection._body_timeout = UPLOAD_BODY_TIMEOUT  # type: ignore[union-attr]
        self.files.tmp.mkdir(parents=True, exist_ok=True)
        self._tmp = self.files.tmp / f"upload-{secrets.token_hex(12)}"
        self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self._finished:
            return None
        if self._refused is not None:
            self._drained += len(chunk)
            if self._drained > DRAIN_BYTES:
                self._answer_refusal()
            return None
        self._received += len(chunk)
        settings = self.node.settings
        if self._received > settings.upload_max_bytes:
            self._refuse(self.files.too_large(f"more than {settings.upload_max_bytes}"))
            return None
        if self._used + self._received > settings.upload_quota_bytes:
            self._refuse(self.files.over_quota(self._used, f"more than {self._received}"))
            return None
        if len(self._head) < MAX_SNIFF_BYTES:
            self._head += chunk[: MAX_SNIFF_BYTES - len(self._head)]
        # Hashing and writing in a thread (hashlib and os.write let go of the
        # GIL): the loop only reads the socket. Tornado reads the next chunk
        # once this future is done, so a slow disk slows the upload, not chat.
        self._pending = asyncio.get_running_loop().run_in_executor(self.files.writer, self._take, chunk)
        return self._pending

    def _take(self, chunk: bytes) -> None:
        """In :attr:`Files.writer`: hash ``chunk`` and append it to the temporary file."""
        fd = self._fd
        if fd is None:  # refused or gone meanwhile
            return
        self._hash.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]
        self._unsynced += len(chunk)
        if self._unsynced >= SYNC_EVERY_BYTES:
            # Written back a slice at a time: dirty pages piling up by the
            # hundred megabytes make the store's next fsync wait for all of
            # them (ext4 commits them with its journal), and that is chat's latency.
            os.fdatasync(fd)
            self._unsynced = 0

    def _refuse(self, exc: ClientError) -> None:
        self._refused = exc
        self._discard()

    def _answer_refusal(self) -> None:
        assert self._refused is not None
        self.send_error(self._refused.status, exc_info=(type(self._refused), self._refused, None))

    async def post(self) -> None:
        if self._refused is not None:
            self._answer_refusal()
            return
        assert self._fd is not None and self._tmp is not None and self._key is not None
        os.close(self._fd)
        self._fd = None
        if self._received == 0:
            raise BadRequest("upload is empty: send the file's bytes as the request body", code="empty_file")
        kind = sniff(bytes(self._head))
        settings = self.node.settings
        width = height = None
        thumb = None
        if kind in IMAGE_TYPES:
            image = await self.files.reencode(self._tmp, kind)
            sha256, ext, size = image.sha256, image.ext, image.size
            width, height, thumb = image.width, image.height, image.thumb_ext
        else:
            sha256, ext, size = self._hash.hexdigest(), extension_of(kind), self._received
        used = await self.files.store.upload_bytes(self._key)
        if used + size > settings.upload_quota_bytes:
            raise self.files.over_quota(used, size)
        if kind not in IMAGE_TYPES:
            final = stored_path(self.files.root, sha256, ext)
            if final.exists():
                self._tmp.unlink()
            else:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self._tmp, final)
            self._tmp = None
        record = await self.files.store.save_file(FileRecord(
            id=new_file_id(), owner=self._key, sha256=sha256, ext=ext, size=size, type=kind,
            name=clean_name(query_argument(self.request, "name")), created=int(time.time()),
            width=width, height=height, thumb=thumb,
        ))
        self.write_json({**record.to_wire(), "sha256": record.sha256}, status=201)

    def _discard(self) -> None:
        if self._pending is not None and not self._pending.done():
            # A chunk is being written: closing its descriptor now could let
            # the next open() reuse the number under the writing thread.
            self._pending.add_done_callback(lambda _future: self._discard())
            return
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def on_finish(self) -> None:
        self._done()

    def on_connection_close(self) -> None:
        self._done()

    def _done(self) -> None:
        self._discard()
        if self._key is not None:
            self.files.end_upload(self._key)
            self._key = None


class FileHandler(JSONErrors, tornado.web.StaticFileHandler):
    """``GET /files/<sha256>[.ext]`` and ``/files/thumbs/<sha256>.<ext>``: a
    stored file, to a signed-in user who may fetch it (:meth:`Files.may_fetch`),
    with Range, ETag and a year of (private) caching: the URL names the content."""

    node: WebNode

    def initialize(self, node: WebNode) -> None:  # type: ignore[override]
        self.node = node
        super().initialize(path=str(node.files.root))

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", "sandbox; default-src 'none'; img-src 'self'; media-src 'self'")
        self.set_header("Cache-Control", "no-store")  # until the file is found

    async def prepare(self) -> None:
        self.node.check_host(self.request.headers.get("Host"))
        token, _by_cookie = token_from_request(self.request)
        session = await self.node.tokens.check(token, now=time.monotonic()) if token else None
        if session is None:
            raise Unauthorized("files are for signed-in users: send the session cookie or a bearer token")
        match = FILE_NAME.fullmatch(self.path_args[0].removeprefix("thumbs/")) if self.path_args else None
        if match is None or not await self.node.files.may_fetch(match.group(1), nick_key(session.nick)):
            raise NotFound("no such file")

    def parse_url_path(self, url_path: str) -> str:
        thumb = url_path.startswith("thumbs/")
        match = FILE_NAME.fullmatch(url_path.removeprefix("thumbs/"))
        if match is None:
            raise NotFound("no such file")
        sha256, ext = match.groups()
        if ext is None:  # the name without its extension: whichever is stored
            for candidate in (*IMAGE_TYPES.values(), *OTHER_TYPES.values(), "bin"):
                if stored_path(self.node.files.root, sha256, candidate).exists():
                    ext = candidate
                    break
            else:
                raise NotFound("no such file")
        return f"{'thumbs/' if thumb else ''}{sha256[:2]}/{sha256}.{ext}"

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        if not os.path.isfile(absolute_path):
            raise NotFound("no such file")
        return super().validate_absolute_path(root, absolute_path)

    @classmethod
    def get_content_version(cls, abspath: str) -> str:
        # The name is the content's SHA-256: Tornado's default reads the whole
        # file to hash it again, on the loop, at every request.
        return abspath.rpartition("/")[2].partition(".")[0]

    def get_content_type(self) -> str:
        assert self.absolute_path is not None
        return type_of_extension(self.absolute_path.rpartition(".")[2]) or OCTET_STREAM

    def get_cache_time(self, path: str, modified: Any, mime_type: str) -> int:
        return 365 * 24 * 3600

    def set_extra_headers(self, path: str) -> None:
        # Behind a session: no shared cache may keep it.
        self.set_header("Cache-Control", "private, max-age=31536000, immutable")
        name = path.rpartition("/")[2]
        if self.get_content_type() in IMAGE_TYPES:
            self.set_header("Content-Disposition", f'inline; filename="{name}"')
        else:
            self.set_header("Content-Disposition", f'attachment; filename="{name}"')

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.clear_header("Content-Disposition")
        self.set_header("Cache-Control", "no-store")
        super().write_error(status_code, **kwargs)

