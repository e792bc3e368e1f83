"""Uploads and fetches for the files tests (tests/test_files_*.py), over real sockets."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any
from urllib.parse import quote

from PIL import Image

from support import TIMEOUT, HTTPResponse, close_writer, http, read_head


async def upload(
    address: tuple[str, int], token: str | None, data: bytes, *, name: str = "file.bin",
    chunked: bool = False, chunk: int = 64 * 1024, headers: dict[str, str] | None = None,
) -> HTTPResponse:
    """``POST /api/files?name=`` with ``data`` as the body; ``chunked`` sends it
    without a Content-Length. A refusal may come before the whole body is written."""
    path = f"/api/files?name={quote(name)}"
    if not chunked:
        return await http(address, "POST", path, token=token, body=data, headers=headers)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), TIMEOUT)
    try:
        lines = [f"POST {path} HTTP/1.1", f"Host: {address[0]}:{address[1]}", "Connection: close",
                 "Transfer-Encoding: chunked"]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        try:
            for start in range(0, len(data), chunk):
                part = data[start:start + chunk]
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            pass  # refused early: the answer is waiting to be read
        status, response_headers = await asyncio.wait_for(read_head(reader), TIMEOUT)
        body = await asyncio.wait_for(reader.readexactly(int(response_headers["content-length"])), TIMEOUT)
        return HTTPResponse(status, response_headers, body)
    finally:
        await close_writer(writer)


async def uploaded(address: tuple[str, int], token: str, data: bytes, *, name: str = "file.bin") -> dict[str, Any]:
    """The attachment object of a successful upload."""
    response = await upload(address, token, data, name=name)
    assert response.status == 201, (response.status, response.body)
    value: dict[str, Any] = json.loads(response.body)
    return value


async def fetch(
    address: tuple[str, int], token: str | None, url: str, headers: dict[str, str] | None = None
) -> HTTPResponse:
    return await http(address, "GET", url, token=token, headers=headers)


def image_bytes(size: tuple[int, int] = (64, 48), fmt: str = "PNG", color: str = "red", **save: Any) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format=fmt, **save)
    return out.getvalue()


def jpeg_with_gps_and_orientation(size: tuple[int, int] = (80, 40)) -> bytes:
    """A JPEG whose EXIF holds a GPS position, a camera make and orientation 6
    (stored on its side: shown rotated 90° clockwise, so ``size`` reversed)."""
    image = Image.new("RGB", size, "blue")
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    exif[0x0112] = 6  # Orientation: rotate 90 CW
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (48.0, 51.0, 29.0)
    gps[3] = "E"
    gps[4] = (2.0, 17.0, 40.0)
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif)
    return out.getvalue()
