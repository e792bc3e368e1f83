"""Files on the page: attach by button (set_input_files), paste and drop;
progress, thumbnails in messages, the viewer (Escape closes it), non-images as
download chips; a refused upload says why; in English and Chinese."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def _png(path: Path, size: tuple[int, int] = (200, 120), color: str = "orange") -> Path:
    Image.new("RGB", size, color).save(path, format="PNG")
    return path


def test_an_image_and_a_file_reach_another_reader(
    start_server: Any, open_chat: Any, tmp_path: Path
) -> None:
    server = start_server()
    pat = open_chat(server, "pat")
    quinn = open_chat(server, "quinn", transport="longpoll")
    for chat in (pat, quinn):
        chat.join("files")
        chat.wait_open()
    paper = tmp_path / "paper.pdf"
    paper.write_bytes(b"%PDF-1.4\n" + b"0" * 2000)
    pat.page.set_input_files("#file-input", [str(_png(tmp_path / "sunset.png")), str(paper)])
    tray = pat.page.locator("#upload-tray li[data-testid=upload]")
    expect(tray).to_have_count(2)
    expect(pat.page.locator("#upload-tray li[data-state=ready]")).to_have_count(2)
    # Files alone, no text: Enter sends them.
    pat.page.press("#composer", "Enter")
    expect(tray).to_have_count(0)
    for chat in (pat, quinn):
        message = chat.confirmed().last
        expect(message.locator("button.attachment-image img")).to_have_attribute("alt", "sunset.png")
        chip = message.locator("a.attachment-file")
        expect(chip).to_have_attribute("download", "paper.pdf")
        expect(chip).to_contain_text("paper.pdf")
    # The thumbnail loaded (the session cookie is the image request's credential).
    thumb = quinn.page.locator("#messages li[data-seq] button.attachment-image img").last
    expect(thumb).to_have_js_property("complete", True)
    assert thumb.evaluate("img => img.naturalWidth") > 0
    # The viewer opens on click, shows the full image, and Escape closes it.
    quinn.page.locator("#messages li[data-seq] button.attachment-image").last.click()
    viewer = quinn.page.locator("#viewer")
    expect(viewer).to_be_visible()
    expect(viewer.locator("[data-testid=viewer-name]")).to_have_text("sunset.png")
    expect(viewer.locator("img")).to_have_js_property("naturalWidth", 200)
    quinn.page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()
    expect(quinn.page.locator("#messages li[data-seq] button.attachment-image").last).to_be_focused()
    pat.assert_no_errors()
    quinn.assert_no_errors()


def test_paste_and_drop_attach_images_in_chinese(start_server: Any, open_chat: Any) -> None:
    server = start_server()
    chat = open_chat(server, "xiaoming", locale="zh-CN")
    chat.join("photos")
    chat.wait_open()
    def png(color: str) -> list[int]:
        out = io.BytesIO()
        Image.new("RGB", (40, 30), color).save(out, format="PNG")
        return list(out.getvalue())

    chat.page.locator("#composer").focus()
    chat.page.evaluate("""(bytes) => {
        const file = new File([new Uint8Array(bytes)], "pasted.png", {type: "image/png"});
        const transfer = new DataTransfer();
        transfer.items.add(file);
        document.querySelector("#composer").dispatchEvent(
            new ClipboardEvent("paste", {clipboardData: transfer, bubbles: true, cancelable: true}));
    }""", png("purple"))
    chat.page.evaluate("""(bytes) => {
        const file = new File([new Uint8Array(bytes)], "dropped.png", {type: "image/png"});
        const transfer = new DataTransfer();
        transfer.items.add(file);
        const target = document.querySelector("#scroller");
        target.dispatchEvent(new DragEvent("dragover", {dataTransfer: transfer, bubbles: true, cancelable: true}));
        target.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }""", png("teal"))
    expect(chat.page.locator("#upload-tray li[data-state=ready]")).to_have_count(2)
    expect(chat.page.locator("#upload-tray button.upload-remove").first).to_have_attribute(
        "aria-label", "移除 pasted.png")
    expect(chat.page.locator("#attach-button")).to_have_attribute("aria-label", "添加文件")
    chat.page.fill("#composer", "两张图")
    chat.page.press("#composer", "Enter")
    message = chat.confirmed().last
    expect(message.locator("[data-testid=message-body]")).to_have_text("两张图")
    expect(message.locator("button.attachment-image")).to_have_count(2)
    expect(message.locator("button.attachment-image").first).to_have_attribute("aria-label", "打开图片 pasted.png")
    chat.assert_no_errors()


def test_a_file_over_the_limit_says_so_and_can_be_removed(
    start_server: Any, open_chat: Any, tmp_path: Path
) -> None:
    server = start_server(web_args=("--upload-max-bytes", "4096"))
    chat = open_chat(server, "big")
    chat.join("limits")
    chat.wait_open()
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 50_000)
    chat.page.set_input_files("#file-input", str(big))
    failed = chat.page.locator("#upload-tray li[data-state=failed]")
    expect(failed).to_have_count(1)
    expect(failed.locator("[data-testid=upload-error]")).to_have_text("the file is too large")
    failed.locator("button.upload-remove").click()
    expect(chat.page.locator("#upload-tray li")).to_have_count(0)
    expect(chat.page.locator("#upload-tray")).to_be_hidden()
    chat.assert_no_errors()
