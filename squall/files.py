"""Uploaded files, without the web: what a file is, how it is stored and how
an image is made safe.

Theory of operation: an upload arrives as bytes streamed into a temporary file
in ``<data_dir>/files/tmp`` while a SHA-256 is kept of them (the web node's
:mod:`squall.web.files`). Its type is then read from its first bytes with
``filetype`` — never from the name or the ``Content-Type`` the client gave, so
an HTML page named ``cat.png`` is stored and served as a download of
``application/octet-stream``. Types on the :data:`IMAGE_TYPES` list are decoded
and written again by Pillow (:func:`reencode_image`, run in a worker process):
orientation applied, every piece of metadata (EXIF and its GPS position, XMP,
ICC, text chunks) left behind, and a thumbnail made. Types on
:data:`OTHER_TYPES` keep their type; everything else becomes
``application/octet-stream``.

Stored files are named by the SHA-256 of the bytes stored
(``files/ab/<sha256>.<ext>``, thumbnails ``files/thumbs/ab/<sha256>.<ext>``
named after the file they show), so one content is kept once whoever sent it,
and a URL cannot be guessed. Who may fetch one is the web node's question
(:meth:`squall.web.files.Files.may_fetch`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import secrets
import unicodedata
import warnings
from pathlib import Path
from typing import Any

import filetype  # type: ignore[import-untyped]

__all__ = [
    "IMAGE_TYPES", "OTHER_TYPES", "OCTET_STREAM", "THUMB_SIZE", "FileRecord", "ImageResult",
    "ImageRefused", "sniff", "extension_of", "clean_name", "new_file_id", "check_file_id",
    "stored_path", "thumb_path", "file_url", "thumb_url", "reencode_image", "MAX_NAME",
    "FILE_NAME", "is_file_id", "MAX_SNIFF_BYTES", "type_of_extension",
]

# Served inline (with a CSP sandbox), re-encoded on upload. SVG is not an image
# here: it is a document that runs script.
IMAGE_TYPES: dict[str, str] = {
    "image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp",
}
# Kept as they are and served as downloads (Content-Disposition: attachment).
OTHER_TYPES: dict[str, str] = {
    "application/pdf": "pdf", "application/zip": "zip", "application/gzip": "gz",
    "application/x-tar": "tar", "application/x-7z-compressed": "7z",
    "audio/mpeg": "mp3", "audio/ogg": "ogg", "audio/x-wav": "wav", "audio/x-flac": "flac",
    "video/mp4": "mp4", "video/webm": "webm", "video/quicktime": "mov",
}
OCTET_STREAM = "application/octet-stream"
_EXTENSION_TYPES = {ext: kind for kind, ext in {**IMAGE_TYPES, **OTHER_TYPES, OCTET_STREAM: "bin"}.items()}
# filetype reads at most this much of a file's head (its largest signature).
MAX_SNIFF_BYTES = 8192
# The longest side of a thumbnail, in pixels.
THUMB_SIZE = 320
# A file name as kept: longer ones are cut (keeping the extension).
MAX_NAME = 200
# A file's URL name: its SHA-256 in hex, then its extension.
FILE_NAME = re.compile(r"([0-9a-f]{64})(?:\.([a-z0-9]{1,5}))?")
_FILE_ID = re.compile(r"f_[A-Za-z0-9_-]{22}")
_NAME_DROP = re.compile(r"[\x00-\x1f\x7f/\\]")


@dataclasses.dataclass(frozen=True, slots=True)
class FileRecord:
    """One upload: a row of the ``files`` table."""

    id: str  # "f_" and 22 url-safe characters: what a message's `attachments` names
    owner: str  # the uploader's nick key
    sha256: str  # of the bytes stored
    ext: str
    size: int  # bytes stored
    type: str  # the MIME type served
    name: str  # the name the client gave, cleaned
    created: int  # Unix seconds
    width: int | None = None
    height: int | None = None
    thumb: str | None = None  # the thumbnail's extension, when there is one

    @property
    def is_image(self) -> bool:
        return self.type in IMAGE_TYPES

    def to_wire(self) -> dict[str, Any]:
        """The attachment object of a message (and the upload's answer)."""
        return {
            "id": self.id, "name": self.name, "type": self.type, "size": self.size,
            "url": file_url(self.sha256, self.ext),
            "thumb": thumb_url(self.sha256, self.thumb) if self.thumb else None,
            "width": self.width, "height": self.height,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class ImageResult:
    """What :func:`reencode_image` wrote."""

    sha256: str
    ext: str
    type: str
    size: int
    width: int
    height: int
    thumb_ext: str


class ImageRefused(Exception):
    """An image Pillow cannot or must not decode; ``code`` and ``reason`` go to the client."""

    def __init__(self, reason: str, code: str) -> None:
        # Both in args: the exception crosses from the worker process by pickle.
        super().__init__(reason, code)
        self.code = code
        self.reason = reason


def sniff(head: bytes) -> str:
    """The MIME type to store a file with ``head`` (its first bytes) as:
    an allowed type that ``filetype`` recognises, else :data:`OCTET_STREAM`."""
    kind = filetype.guess_mime(head) if head else None
    if kind in IMAGE_TYPES or kind in OTHER_TYPES:
        return str(kind)
    return OCTET_STREAM


def extension_of(kind: str) -> str:
    return IMAGE_TYPES.get(kind) or OTHER_TYPES.get(kind) or "bin"


def type_of_extension(ext: str) -> str | None:
    """The MIME type a stored file with extension ``ext`` is served as."""
    return _EXTENSION_TYPES.get(ext)


def clean_name(raw: str | None) -> str:
    """A client's file name made safe to keep and show: no path, no control or
    bidirectional characters, at most :data:`MAX_NAME` characters; "file" if
    nothing is left."""
    if not raw:
        return "file"
    name = _NAME_DROP.sub("", raw.replace("\\", "/").rsplit("/", 1)[-1])
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cf", "Cc", "Cs")).strip()
    if len(name) > MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: MAX_NAME - len(ext) - 1] + "." + ext) if dot and len(ext) <= 10 else name[:MAX_NAME]
    return name or "file"


def new_file_id() -> str:
    return "f_" + secrets.token_urlsafe(16)


def is_file_id(value: object) -> bool:
    return isinstance(value, str) and _FILE_ID.fullmatch(value) is not None


def check_file_id(value: object) -> str:
    if not is_file_id(value):
        raise ValueError(f"{str(value)[:40]!r} is not a file id")
    assert isinstance(value, str)
    return value


def stored_path(root: Path, sha256: str, ext: str) -> Path:
    return root / sha256[:2] / f"{sha256}.{ext}"


def thumb_path(root: Path, sha256: str, ext: str) -> Path:
    return root / "thumbs" / sha256[:2] / f"{sha256}.{ext}"


def file_url(sha256: str, ext: str) -> str:
    return f"/files/{sha256}.{ext}"


def thumb_url(sha256: str, ext: str) -> str:
    return f"/files/thumbs/{sha256}.{ext}"


def _place(data: bytes, path: Path) -> None:
    """Write ``data`` to ``path`` atomically (content-addressed: an existing file is the same)."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    with open(temporary, "wb") as out:
        out.write(data)
    os.replace(temporary, path)


def reencode_image(source: str, root: str, kind: str, *, max_pixels: int) -> ImageResult:
    """Decode the image at ``source`` (sniffed as ``kind``), write it again
    without metadata under ``root`` with a thumbnail, and say what was written.

    Runs in a worker process (CPU-bound, and a hostile image must not take the
    web node with it). Raises :class:`ImageRefused` (``too_many_pixels`` or
    ``bad_image``); never leaves a partial file behind.
    """
    from PIL import Image, ImageOps

    # Pillow's own guard, at our limit; its warning (above the limit, below
    # twice it) is an error too. The size is also checked before decoding.
    # A module global: put back afterwards, for a caller in the same process.
    default_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels
    try:
        return _reencode_file(source, root, kind, max_pixels, Image, ImageOps)
    finally:
        Image.MAX_IMAGE_PIXELS = default_limit


def _reencode_file(source: str, root: str, kind: str, max_pixels: int, Image: Any, ImageOps: Any) -> ImageResult:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(source) as image:
                frames = getattr(image, "n_frames", 1)
                pixels = image.width * image.height * max(1, frames)
                if pixels > max_pixels:
                    raise ImageRefused(
                        f"image has {image.width}x{image.height} pixels"
                        f"{f' in {frames} frames' if frames > 1 else ''}, more than the limit of"
                        f" {max_pixels} pixels", "too_many_pixels",
                    )
                image.load()
                data, width, height, thumb, thumb_ext = _reencode(image, kind, Image, ImageOps)
        except ImageRefused:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRefused(
                f"image has more pixels than the limit of {max_pixels} pixels ({exc})", "too_many_pixels"
            ) from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise ImageRefused(f"image could not be decoded: {exc}", "bad_image") from None
    sha256 = hashlib.sha256(data).hexdigest()
    ext = IMAGE_TYPES[kind]
    top = Path(root)
    _place(data, stored_path(top, sha256, ext))
    _place(thumb, thumb_path(top, sha256, thumb_ext))
    return ImageResult(sha256=sha256, ext=ext, type=kind, size=len(data), width=width, height=height,
                       thumb_ext=thumb_ext)


def _reencode(image: Any, kind: str, Image: Any, ImageOps: Any) -> tuple[bytes, int, int, bytes, str]:
    import io

    animated = kind in ("image/gif", "image/webp") and getattr(image, "n_frames", 1) > 1
    if animated:
        frames = []
        for index in range(image.n_frames):
            image.seek(index)
            frames.append(image.convert("RGBA"))
        first = frames[0]
        out = io.BytesIO()
        first.save(
            out, format="GIF" if kind == "image/gif" else "WEBP", save_all=True, append_images=frames[1:],
            duration=image.info.get("duration", 100), loop=image.info.get("loop", 0),
        )
        still = first
    else:
        # EXIF orientation first (a phone photo stands up), then a bare copy:
        # nothing of image.info (EXIF, XMP, ICC, text chunks) reaches the saver.
        still = ImageOps.exif_transpose(image)
        if kind == "image/jpeg":
            still = still.convert("RGB") if still.mode not in ("RGB", "L") else still
        elif still.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):
            still = still.convert("RGBA")
        transparency = still.info.get("transparency") if still.mode in ("P", "L", "RGB") else None
        still = still.copy()
        still.info = {}
        out = io.BytesIO()
        options: dict[str, Any] = {}
        if kind == "image/jpeg":
            options = {"quality": 90}
        elif transparency is not None and kind in ("image/png", "image/gif"):
            options = {"transparency": transparency}
        still.save(out, format={"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF",
                                "image/webp": "WEBP"}[kind], **options)
    width, height = still.size
    thumb = still.convert("RGBA") if still.mode in ("P", "LA", "1") else still.copy()
    thumb.info = {}
    thumb.thumbnail((THUMB_SIZE, THUMB_SIZE))
    small = io.BytesIO()
    if thumb.mode == "RGBA":
        thumb.save(small, format="PNG")
        thumb_ext = "png"
    else:
        thumb.convert("RGB").save(small, format="JPEG", quality=80)
        thumb_ext = "jpg"
    return out.getvalue(), width, height, small.getvalue(), thumb_ext
