"""squall/files.py and the attachment checks, without a server: sniffing, names,
re-encoding, the send's ``attachments`` and the processor boundary's."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from files_support import image_bytes, jpeg_with_gps_and_orientation
from squall.errors import BadRequest
from squall.files import (
    OCTET_STREAM, ImageRefused, clean_name, reencode_image, sniff, stored_path, thumb_path,
)
from squall.processor.server import parse_process
from squall.protocol import MAX_ATTACHMENTS, parse_command, parse_send_body


@pytest.mark.parametrize(("head", "kind"), [
    (image_bytes(fmt="PNG"), "image/png"),
    (image_bytes(fmt="JPEG"), "image/jpeg"),
    (image_bytes(fmt="GIF"), "image/gif"),
    (image_bytes(fmt="WEBP"), "image/webp"),
    (b"%PDF-1.7\n", "application/pdf"),
    (b"<!DOCTYPE html><script>alert(1)</script>", OCTET_STREAM),
    (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', OCTET_STREAM),
    (b"plain text", OCTET_STREAM),
    (b"", OCTET_STREAM),
])
def test_the_type_comes_from_the_bytes(head: bytes, kind: str) -> None:
    assert sniff(head) == kind


@pytest.mark.parametrize(("raw", "name"), [
    ("cat.png", "cat.png"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\photo.jpg", "photo.jpg"),
    ("evil\u202egnp.exe", "evilgnp.exe"),  # the right-to-left override is dropped
    ("a\x00b\nc.txt", "abc.txt"),
    ("", "file"),
    (None, "file"),
    ("/", "file"),
    ("x" * 300 + ".pdf", "x" * 196 + ".pdf"),
])
def test_names_are_cleaned(raw: str | None, name: str) -> None:
    assert clean_name(raw) == name


def test_reencoding_strips_metadata_and_stands_the_image_up(tmp_path: Path) -> None:
    source = tmp_path / "in.jpg"
    source.write_bytes(jpeg_with_gps_and_orientation((60, 20)))
    result = reencode_image(str(source), str(tmp_path / "files"), "image/jpeg", max_pixels=10_000)
    assert (result.width, result.height) == (20, 60)
    stored = stored_path(tmp_path / "files", result.sha256, "jpg").read_bytes()
    assert len(stored) == result.size and b"SpyCam" not in stored
    with Image.open(io.BytesIO(stored)) as image:
        assert not image.getexif() and image.size == (20, 60)
    assert thumb_path(tmp_path / "files", result.sha256, result.thumb_ext).exists()


def test_png_text_chunks_and_transparency(tmp_path: Path) -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Secret Person")
    image = Image.new("RGBA", (30, 30), (255, 0, 0, 128))
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    source = tmp_path / "in.png"
    source.write_bytes(out.getvalue())
    result = reencode_image(str(source), str(tmp_path), "image/png", max_pixels=10_000)
    stored = stored_path(tmp_path, result.sha256, "png").read_bytes()
    assert b"Secret Person" not in stored
    assert Image.open(io.BytesIO(stored)).getpixel((0, 0)) == (255, 0, 0, 128)
    assert result.thumb_ext == "png"


def test_too_many_pixels_and_broken_images_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "big.png"
    Image.new("1", (300, 300)).save(source, format="PNG")
    with pytest.raises(ImageRefused) as refused:
        reencode_image(str(source), str(tmp_path), "image/png", max_pixels=10_000)
    assert refused.value.code == "too_many_pixels" and "10000" in refused.value.reason
    broken = tmp_path / "broken.png"
    broken.write_bytes(image_bytes()[:40])
    with pytest.raises(ImageRefused) as refused:
        reencode_image(str(broken), str(tmp_path), "image/png", max_pixels=10_000)
    assert refused.value.code == "bad_image"
    # Nothing stored for either.
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".png", ".jpg")
                and p.parent != tmp_path]


def test_an_animated_gif_stays_animated(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (20, 20), color) for color in ("red", "green", "blue")]
    source = tmp_path / "anim.gif"
    frames[0].save(source, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(source) as original:
        assert original.n_frames == 3
    result = reencode_image(str(source), str(tmp_path / "out"), "image/gif", max_pixels=10_000)
    with Image.open(stored_path(tmp_path / "out", result.sha256, "gif")) as stored:
        assert stored.n_frames == 3
    with pytest.raises(ImageRefused):  # frames count towards the pixel limit
        reencode_image(str(source), str(tmp_path / "out"), "image/gif", max_pixels=1000)


FILE_ID = "f_" + "a" * 22


def test_a_send_names_its_attachments() -> None:
    send = parse_command(b'{"type":"send","room":"r","id":"1","body":"","attachments":["%s"]}' % FILE_ID.encode())
    assert send.attachments == (FILE_ID,)  # type: ignore[union-attr]
    assert parse_send_body("r", b'{"id":"1","body":"x"}').attachments == ()


@pytest.mark.parametrize("attachments", [
    "f_x", [1], ["not-an-id"], [FILE_ID, FILE_ID], [f"f_{n:022d}" for n in range(MAX_ATTACHMENTS + 1)], {},
])
def test_bad_attachment_lists_are_refused_with_the_id(attachments: object) -> None:
    import json

    frame = json.dumps({"type": "send", "room": "r", "id": "s1", "body": "x", "attachments": attachments})
    with pytest.raises(BadRequest) as refused:
        parse_command(frame)
    assert refused.value.code == "bad_attachment" and refused.value.id == "s1"


def _attachment(**changes: object) -> dict[str, object]:
    return {"id": FILE_ID, "name": "a.png", "type": "image/png", "size": 3, "url": "/files/" + "1" * 64 + ".png",
            "thumb": None, "width": 1, "height": 1, **changes}


def _process(attachments: object) -> dict[str, object]:
    return {"op": "process", "ref": 1, "room": "r", "nick": "n", "id": "i", "body": "", "ts": 0,
            "attachments": attachments}


def test_the_processor_takes_attachment_objects_as_a_web_node_makes_them() -> None:
    draft = parse_process(_process([_attachment()]), max_body_chars=10)
    assert not isinstance(draft, dict) and draft.attachments == (_attachment(),)
    assert draft.to_wire()["attachments"] == [_attachment()]


@pytest.mark.parametrize("attachments", [
    [_attachment(url="https://evil.example/x.png")], [_attachment(size="3")], [_attachment(extra=1)],
    [_attachment(id="x")], [_attachment(width=True)], "nope", [_attachment()] * (MAX_ATTACHMENTS + 1),
])
def test_the_processor_refuses_other_attachments(attachments: object) -> None:
    answer = parse_process(_process(attachments), max_body_chars=10)
    assert isinstance(answer, dict) and answer["code"] == "bad_attachment"
