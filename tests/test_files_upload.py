"""POST /api/files and GET /files/…: limits, sniffing, re-encoding, serving,
access (docs/protocol.md "Files"). One server with small limits, real sockets."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from files_support import fetch, image_bytes, jpeg_with_gps_and_orientation, upload, uploaded
from support import SquallProcess, close_writer, http, read_head, run_async, squall_server

LIMIT = 256 * 1024
QUOTA = 700 * 1024
MAX_PIXELS = 1_000_000


@pytest.fixture(scope="module")
def files_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SquallProcess]:
    with squall_server(tmp_path_factory.mktemp("files"), env={
        "SQUALL_UPLOAD_MAX_BYTES": str(LIMIT), "SQUALL_UPLOAD_QUOTA_BYTES": str(QUOTA),
        "SQUALL_UPLOAD_MAX_PIXELS": str(MAX_PIXELS), "SQUALL_UPLOAD_BURST": "1000",
    }) as server:
        yield server


def _tmp_files(server: SquallProcess) -> list[str]:
    folder = Path(server.data_dir) / "files" / "tmp"
    return os.listdir(folder) if folder.exists() else []


def test_content_length_over_the_limit_is_refused_before_the_body(files_server: SquallProcess) -> None:
    token = files_server.session("cl-over")

    async def scenario() -> None:
        import asyncio

        reader, writer = await asyncio.open_connection(*files_server.address)
        try:
            # The head only: the answer must come without a byte of the body.
            writer.write((
                f"POST /api/files?name=big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Length: {LIMIT + 1}\r\n\r\n"
            ).encode())
            status, headers = await read_head(reader)
            body = json.loads(await reader.readexactly(int(headers["content-length"])))
        finally:
            await close_writer(writer)
        assert status == 413
        assert body["code"] == "too_large" and str(LIMIT) in body["reason"]

    run_async(scenario())


def test_a_streamed_body_over_the_limit_is_refused_while_it_streams(files_server: SquallProcess) -> None:
    token = files_server.session("chunked-over")
    response = run_async(upload(files_server.address, token, os.urandom(LIMIT + 100_000), chunked=True))
    assert response.status == 413, response.body
    body = response.json()
    assert body["code"] == "too_large" and str(LIMIT) in body["reason"]
    assert _tmp_files(files_server) == []
    # A chunked upload under the limit is taken.
    data = os.urandom(LIMIT - 10)
    ok = run_async(upload(files_server.address, token, data, chunked=True))
    assert ok.status == 201 and ok.json()["size"] == len(data)


def test_the_quota_counts_what_a_user_keeps(files_server: SquallProcess) -> None:
    token = files_server.session("quota-user")
    for _ in range(2):
        run_async(uploaded(files_server.address, token, os.urandom(250 * 1024)))
    # The same content again costs nothing more.
    response = run_async(upload(files_server.address, token, os.urandom(250 * 1024)))
    assert response.status == 413
    assert response.json()["code"] == "quota_exceeded"
    assert str(QUOTA) in response.json()["reason"]
    # ... refused from Content-Length before the body, and while streaming without one.
    streamed = run_async(upload(files_server.address, token, os.urandom(250 * 1024), chunked=True))
    assert streamed.status == 413 and streamed.json()["code"] == "quota_exceeded"
    # Another user has a quota of their own.
    other = files_server.session("quota-other")
    run_async(uploaded(files_server.address, other, os.urandom(250 * 1024)))


def test_without_a_session_nothing_is_uploaded_or_served(files_server: SquallProcess) -> None:
    response = run_async(upload(files_server.address, None, b"hello"))
    assert response.status == 401 and response.json()["code"] == "unauthorized"
    bad = run_async(upload(files_server.address, "not-a-token", b"hello"))
    assert bad.status == 401
    token = files_server.session("owner-401")
    stored = run_async(uploaded(files_server.address, token, b"hello there"))
    assert run_async(fetch(files_server.address, None, stored["url"])).status == 401


def test_an_html_page_named_png_is_a_download_of_octet_stream(files_server: SquallProcess) -> None:
    token = files_server.session("sniffer")
    page = b"<!DOCTYPE html><html><script>alert(document.cookie)</script></html>"
    stored = run_async(uploaded(files_server.address, token, page, name="cat.png"))
    assert stored["type"] == "application/octet-stream"
    assert stored["name"] == "cat.png" and stored["url"].endswith(".bin")
    assert stored["thumb"] is None and stored["width"] is None
    served = run_async(fetch(files_server.address, token, stored["url"]))
    assert served.status == 200 and served.body == page
    assert served.headers["content-type"] == "application/octet-stream"
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["content-security-policy"].startswith("sandbox")
    assert served.headers["content-disposition"].startswith("attachment")
    assert "immutable" in served.headers["cache-control"]
    # A PDF keeps its type, and is a download too.
    pdf = run_async(uploaded(files_server.address, token, b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", name="a.txt"))
    assert pdf["type"] == "application/pdf" and pdf["url"].endswith(".pdf")
    served = run_async(fetch(files_server.address, token, pdf["url"]))
    assert served.headers["content-disposition"].startswith("attachment")


def test_exif_and_its_gps_position_are_gone_and_orientation_applied(files_server: SquallProcess) -> None:
    token = files_server.session("photographer")
    original = jpeg_with_gps_and_orientation((80, 40))
    stored = run_async(uploaded(files_server.address, token, original, name="holiday.jpg"))
    assert stored["type"] == "image/jpeg"
    assert (stored["width"], stored["height"]) == (40, 80)  # stood up by its orientation
    served = run_async(fetch(files_server.address, token, stored["url"]))
    assert served.status == 200 and served.headers["content-type"] == "image/jpeg"
    assert b"SpyCam" not in served.body and b"Exif" not in served.body
    image = Image.open(io.BytesIO(served.body))
    assert image.size == (40, 80)
    assert not image.getexif() and not image.getexif().get_ifd(0x8825)
    assert "exif" not in image.info
    assert served.headers["content-disposition"].startswith("inline")
    assert served.headers["content-security-policy"].startswith("sandbox")
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["cache-control"] == "private, max-age=31536000, immutable"
    thumb = run_async(fetch(files_server.address, token, stored["thumb"]))
    assert thumb.status == 200 and thumb.headers["content-type"].startswith("image/")
    assert b"SpyCam" not in thumb.body


def test_a_thumbnail_is_small_and_ranges_are_served(files_server: SquallProcess) -> None:
    token = files_server.session("thumbs")
    stored = run_async(uploaded(files_server.address, token, image_bytes((900, 600), "PNG"), name="wide.png"))
    assert stored["type"] == "image/png" and (stored["width"], stored["height"]) == (900, 600)
    thumb = Image.open(io.BytesIO(run_async(fetch(files_server.address, token, stored["thumb"])).body))
    assert max(thumb.size) <= 320
    part = run_async(fetch(files_server.address, token, stored["url"], headers={"Range": "bytes=0-7"}))
    assert part.status == 206 and part.body == b"\x89PNG\r\n\x1a\n"
    # The name without its extension is the same file.
    bare = run_async(fetch(files_server.address, token, stored["url"].rsplit(".", 1)[0]))
    assert bare.status == 200 and bare.headers["content-type"] == "image/png"


def test_a_decompression_bomb_is_refused(files_server: SquallProcess) -> None:
    token = files_server.session("bomber")
    bomb = io.BytesIO()
    Image.new("1", (2000, 2000)).save(bomb, format="PNG")  # 4 Mpx in a few hundred bytes
    assert len(bomb.getvalue()) < 10_000
    response = run_async(upload(files_server.address, token, bomb.getvalue(), name="bomb.png"))
    assert response.status == 413, response.body
    body = response.json()
    assert body["code"] == "too_many_pixels" and str(MAX_PIXELS) in body["reason"]
    # A broken image is refused with its own code.
    broken = image_bytes((64, 64), "PNG")[:60]
    response = run_async(upload(files_server.address, token, broken, name="broken.png"))
    assert response.status == 400 and response.json()["code"] == "bad_image"
    assert run_async(upload(files_server.address, token, b"")).json()["code"] == "empty_file"


def test_a_file_is_only_for_its_uploader_until_it_is_posted(files_server: SquallProcess) -> None:
    alice, bob = files_server.session("alice-f"), files_server.session("bob-f")
    stored = run_async(uploaded(files_server.address, alice, image_bytes(color="green"), name="mine.png"))
    unknown = "/files/" + "0" * 64 + ".png"
    # Not yours: the same answer as no file at all.
    for url in (stored["url"], stored["thumb"], unknown):
        response = run_async(fetch(files_server.address, bob, url))
        assert response.status == 404 and response.json()["code"] == "not_found"
    status, body = files_server.api(
        "POST", "/api/rooms/files-room/messages", {"body": "", "id": "m1", "attachments": [stored["id"]]},
        token=alice,
    )
    assert status == 200, body
    assert run_async(fetch(files_server.address, bob, stored["url"])).status == 200
    assert run_async(fetch(files_server.address, bob, stored["thumb"])).status == 200


def test_uploads_per_user_are_rate_limited(tmp_path: Path) -> None:
    with squall_server(tmp_path, env={"SQUALL_UPLOAD_BURST": "2", "SQUALL_UPLOAD_RATE": "0.01"}) as server:
        token = server.session("hasty")
        for n in range(2):
            run_async(uploaded(server.address, token, b"file %d" % n))
        response = run_async(upload(server.address, token, b"one too many"))
        assert response.status == 429
        body = response.json()
        assert body["code"] == "rate_limited" and body["limit"] == "upload_per_user"
        assert "retry-after" in response.headers


def test_a_body_that_is_not_an_upload_route_is_still_limited(files_server: SquallProcess) -> None:
    # The upload limit is the upload's: other routes keep max_body_bytes.
    token = files_server.session("other-route")
    response = run_async(http(files_server.address, "POST", "/api/rooms/x/messages", token=token,
                              body=b"x" * (100 * 1024)))
    assert response.status == 413


def test_a_user_streams_at_most_upload_concurrency_uploads_at_once(tmp_path: Path) -> None:
    import asyncio

    with squall_server(tmp_path, env={"SQUALL_UPLOAD_CONCURRENCY": "2"}) as server:
        token = server.session("busy")

        async def scenario() -> None:
            streams = []
            try:
                for n in range(2):
                    reader, writer = await asyncio.open_connection(*server.address)
                    streams.append((reader, writer))
                    writer.write((
                        f"POST /api/files?name=slow{n} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        f"Authorization: Bearer {token}\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n"
                    ).encode())
                    # Tornado says Continue once the handler has taken the upload in (prepare ran).
                    line = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
                    assert line.startswith(b"HTTP/1.1 100"), line
                refused = await upload(server.address, token, b"third")
                assert refused.status == 429
                assert refused.json()["limit"] == "upload_concurrency"
                # One finishes: the next is taken.
                reader, writer = streams[0]
                writer.write(b"y" * 1000)
                status, headers = await read_head(reader)
                assert status == 201
                assert (await upload(server.address, token, b"fourth")).status == 201
            finally:
                for _reader, writer in streams:
                    await close_writer(writer)

        run_async(scenario())
