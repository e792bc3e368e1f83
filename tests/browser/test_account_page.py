"""Accounts on the page: create one, sign out, sign in, the settings dialog, guests."""

from __future__ import annotations

import json
import urllib.error
from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"


def submit_login(chat: Any, mode: str, nick: str, password: str | None = None) -> None:
    page = chat.page
    page.check(f"#mode-{mode}")
    page.fill("#nick-input", nick)
    if password is not None:
        page.fill("#password-input", password)
    page.click("#nick-submit")


def signed_in(chat: Any, nick: str) -> None:
    expect(chat.page.locator("#app")).to_be_visible()
    expect(chat.page.locator("#me")).to_have_text(f"Signed in as {nick}")
    chat.nick = nick


def saved_token(chat: Any) -> str:
    session = json.loads(chat.page.evaluate("() => localStorage.getItem('squall.session')"))
    return str(session["token"])


def open_settings(chat: Any) -> Any:
    chat.page.click("#settings-button")
    dialog = chat.page.locator("#settings")
    expect(dialog).to_be_visible()
    expect(chat.page.locator("#email-save")).to_be_enabled()  # GET /api/me answered
    return dialog


def status_of(server: Any, path: str, token: str) -> int:
    try:
        server.api("GET", path, token=token)
    except urllib.error.HTTPError as error:
        error.close()
        return error.code
    return 200


def test_create_an_account_sign_out_and_sign_in_again(server: Any, open_page: Any) -> None:
    chat = open_page(server)
    page = chat.page
    sockets: list[Any] = []
    page.on("websocket", lambda socket: sockets.append(socket))

    page.check("#mode-create")
    expect(page.locator("#password-input")).to_be_visible()
    expect(page.locator("#password-hint")).to_have_text("At least 8 characters, and not the same as your nick.")
    expect(page.locator("#nick-submit")).to_have_text("Create account")
    submit_login(chat, "create", "carol", PASSWORD)
    signed_in(chat, "carol")
    chat.join("accounts")
    chat.wait_open()
    chat.send_confirmed("hello as an account")
    token = saved_token(chat)
    assert server.api("GET", "/api/me", token=token)["registered"] is True

    open_settings(chat)
    expect(page.locator("#settings-who")).to_have_text("Signed in as carol (account)")
    expect(page.locator("#change-password-form")).to_be_visible()
    page.click("#signout-button")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()
    # Back on the sign-in screen, ready to sign in to the same account.
    expect(page.locator("#mode-signin")).to_be_checked()
    expect(page.locator("#nick-input")).to_have_value("carol")
    expect(page.locator("#password-input")).to_be_focused()
    # The server forgot the token, and the page closed its live connection.
    assert status_of(server, "/api/me", token) == 401
    assert sockets, "the page never opened a WebSocket"
    for socket in sockets:
        if not socket.is_closed():
            socket.wait_for_event("close")
    assert page.evaluate("() => localStorage.getItem('squall.session')") is None

    page.fill("#password-input", PASSWORD)
    page.press("#password-input", "Enter")
    signed_in(chat, "carol")
    chat.join("accounts")
    expect(chat.confirmed()).to_have_count(1)
    assert saved_token(chat) != token
    chat.assert_no_errors()


def test_a_wrong_password_is_shown_beside_the_password(server: Any, open_page: Any) -> None:
    server.api("POST", "/api/account", {"nick": "dora", "password": PASSWORD})
    chat = open_page(server)
    page = chat.page
    submit_login(chat, "signin", "dora", "not the password")
    error = page.locator("#password-error")
    expect(error).to_have_text("Wrong nick or password.")
    expect(page.locator("#password-input")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#password-input")).to_be_focused()
    expect(page.locator("#app")).to_be_hidden()

    submit_login(chat, "signin", "dora", "")
    expect(error).to_have_text("Enter your password.")

    submit_login(chat, "signin", "dora", PASSWORD)
    signed_in(chat, "dora")
    chat.assert_no_errors()


def test_create_account_errors_are_in_words_beside_their_field(server: Any, open_page: Any) -> None:
    server.api("POST", "/api/account", {"nick": "erin", "password": PASSWORD})
    chat = open_page(server)
    page = chat.page
    submit_login(chat, "create", "frank", "short")
    expect(page.locator("#password-error")).to_contain_text("That password is too weak")
    submit_login(chat, "create", "Frank", "FRANK")
    expect(page.locator("#password-error")).to_contain_text("That password is too weak")
    expect(page.locator("#nick-error")).to_be_hidden()

    submit_login(chat, "create", "erin", PASSWORD)
    expect(page.locator("#nick-error")).to_contain_text("That nick cannot be registered")
    expect(page.locator("#nick-error")).to_contain_text("erin")
    expect(page.locator("#password-error")).to_be_hidden()

    submit_login(chat, "create", "bad nick!", PASSWORD)
    expect(page.locator("#nick-error")).to_contain_text("That nick is not allowed")
    chat.assert_no_errors()


def test_a_guest_blocked_by_a_registered_nick_sees_why(server: Any, open_page: Any) -> None:
    server.api("POST", "/api/account", {"nick": "grace", "password": PASSWORD})
    chat = open_page(server)
    page = chat.page
    expect(page.locator("#mode-guest")).to_be_checked()  # the default is still the guest path
    expect(page.locator("#password-input")).to_be_hidden()
    submit_login(chat, "guest", "grace")
    error = page.locator("#nick-error")
    expect(error).to_contain_text("That nick is taken")
    expect(error).to_contain_text("registered")
    expect(page.locator("#nick-input")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#app")).to_be_hidden()

    submit_login(chat, "guest", "gr\u0430ce")  # Cyrillic а
    expect(error).to_contain_text("looks like the registered nick 'grace'")
    expect(page.locator("#app")).to_be_hidden()

    submit_login(chat, "guest", "grace-guest")
    signed_in(chat, "grace-guest")
    chat.assert_no_errors()


def test_the_guest_path_still_works_and_signs_out(server: Any, open_chat: Any) -> None:
    chat = open_chat(server, "henry")
    page = chat.page
    chat.join("guests")
    chat.wait_open()
    chat.send_confirmed("still a guest")
    open_settings(chat)
    expect(page.locator("#settings-who")).to_have_text("Signed in as henry (guest)")
    expect(page.locator("#change-password-form")).to_be_hidden()
    token = saved_token(chat)
    page.click("#signout-button")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#mode-guest")).to_be_checked()
    assert status_of(server, "/api/me", token) == 401
    chat.assert_no_errors()


def test_the_mention_email_set_in_settings_persists(server: Any, open_page: Any) -> None:
    chat = open_page(server)
    page = chat.page
    submit_login(chat, "create", "ivy", PASSWORD)
    signed_in(chat, "ivy")
    open_settings(chat)
    expect(page.locator("#email-input")).to_have_value("")

    page.fill("#email-input", "not an address")
    page.click("#email-save")
    expect(page.locator("#email-error")).to_have_text(
        "The server does not accept that address: use the form name@example.com."
    )
    expect(page.locator("#email-input")).to_have_attribute("aria-invalid", "true")

    page.fill("#email-input", "ivy@example.org")
    page.press("#email-input", "Enter")
    expect(page.locator("#email-status")).to_have_text("Saved: mention mails go to ivy@example.org.")
    expect(page.locator("#email-error")).to_be_hidden()
    assert server.api("GET", "/api/me", token=saved_token(chat))["email"] == "ivy@example.org"

    page.reload()
    signed_in(chat, "ivy")
    open_settings(chat)
    expect(page.locator("#email-input")).to_have_value("ivy@example.org")

    page.fill("#email-input", "")
    page.click("#email-save")
    expect(page.locator("#email-status")).to_have_text("Saved: no mention mails.")
    assert server.api("GET", "/api/me", token=saved_token(chat))["email"] is None
    chat.assert_no_errors()


def test_settings_is_a_modal_dialog_for_the_keyboard(server: Any, open_chat: Any) -> None:
    chat = open_chat(server, "jack")
    page = chat.page
    page.locator("#settings-button").focus()
    page.keyboard.press("Enter")
    dialog = page.locator("#settings")
    expect(dialog).to_be_visible()
    expect(dialog).to_have_attribute("aria-labelledby", "settings-heading")
    assert page.evaluate("() => document.getElementById('settings').matches(':modal')")
    # Tabbing round never reaches the page behind (it is inert): focus is in the
    # dialog, or for one step in the browser's own controls (activeElement = body).
    inside = 0
    for _ in range(12):
        page.keyboard.press("Tab")
        where = page.evaluate(
            """() => document.getElementById('settings').contains(document.activeElement) ? 'dialog'
                : document.activeElement === document.body ? 'browser' : document.activeElement.id"""
        )
        assert where in ("dialog", "browser"), f"focus left the dialog for #{where}"
        inside += where == "dialog"
    assert inside >= 10
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(page.locator("#settings-button")).to_be_focused()

    page.click("#settings-button")
    page.click("#settings-close")
    expect(dialog).to_be_hidden()
    chat.assert_no_errors()


def test_changing_the_password_keeps_this_page_chatting(server: Any, open_page: Any) -> None:
    chat = open_page(server)
    page = chat.page
    live_sockets: list[Any] = []
    page.on("websocket", lambda socket: live_sockets.append(socket))
    submit_login(chat, "create", "kate", PASSWORD)
    signed_in(chat, "kate")
    chat.join("passwords")
    chat.wait_open()
    chat.send_confirmed("before the change")
    old_token = saved_token(chat)

    open_settings(chat)
    page.fill("#current-password", "wrong one")
    page.fill("#new-password", "a new secret")
    page.click("#change-password-submit")
    expect(page.locator("#current-password-error")).to_have_text("The current password is wrong.")

    page.fill("#current-password", PASSWORD)
    page.fill("#new-password", "kate")
    page.click("#change-password-submit")
    expect(page.locator("#new-password-error")).to_contain_text("That password is too weak")

    # The change ends this page's session too, and the server closes its socket (4001)
    # before it answers. Hold the answer until the page has seen that close, so that
    # the close surely comes first: the page must wait for the new token, not give up.
    def answer_after_the_close(route: Any) -> None:
        response = route.fetch()
        for socket in live_sockets:
            if not socket.is_closed():
                socket.wait_for_event("close")
        route.fulfill(response=response)

    page.route("**/api/account/password", answer_after_the_close)
    page.fill("#current-password", PASSWORD)
    page.fill("#new-password", "a new secret")
    page.click("#change-password-submit")
    expect(page.locator("#change-password-status")).to_have_text(
        "Password changed. Your other sessions have been signed out."
    )
    expect(page.locator("#settings")).to_be_visible()  # not sent back to the sign-in screen
    assert status_of(server, "/api/me", old_token) == 401
    page.keyboard.press("Escape")
    # The old token's socket was closed (4001); the page goes on with the new token.
    chat.send_confirmed("after the change")
    expect(chat.confirmed()).to_have_count(2)
    assert saved_token(chat) != old_token

    with pytest.raises(urllib.error.HTTPError) as refused:
        server.api("POST", "/api/session", {"nick": "kate", "password": PASSWORD})
    refused.value.close()
    assert refused.value.code == 401
    assert server.api("POST", "/api/session", {"nick": "kate", "password": "a new secret"})["registered"]
    chat.assert_no_errors()


def test_account_screens_in_chinese(server: Any, open_page: Any) -> None:
    chat = open_page(server, locale="zh-CN")
    page = chat.page
    page.check("#mode-create")
    expect(page.locator("#nick-submit")).to_have_text("注册账号")
    expect(page.locator("#password-hint")).to_have_text("至少 8 个字符，且不能与昵称相同。")
    submit_login(chat, "create", "李雷", "short")
    expect(page.locator("#password-error")).to_contain_text("密码太弱")
    submit_login(chat, "signin", "李雷", PASSWORD)
    expect(page.locator("#password-error")).to_have_text("昵称或密码错误。")
    submit_login(chat, "create", "李雷", PASSWORD)
    expect(page.locator("#me")).to_have_text("当前昵称：李雷")
    page.click("#settings-button")
    expect(page.locator("#settings-heading")).to_have_text("设置")
    expect(page.locator("#signout-button")).to_have_text("退出登录")
    chat.assert_no_errors()


def test_a_session_ended_elsewhere_returns_to_sign_in(server: Any, open_page: Any) -> None:
    """Another device changes the password: this page's socket is closed with 4001, and an
    account's token is not renewed as a guest's would be; the page asks to sign in."""
    here, elsewhere = open_page(server), open_page(server)
    submit_login(here, "create", "liam", PASSWORD)
    signed_in(here, "liam")
    here.join("elsewhere")
    here.wait_open()
    submit_login(elsewhere, "signin", "liam", PASSWORD)
    signed_in(elsewhere, "liam")

    open_settings(elsewhere)
    elsewhere.page.fill("#current-password", PASSWORD)
    elsewhere.page.fill("#new-password", "changed elsewhere")
    elsewhere.page.click("#change-password-submit")
    expect(elsewhere.page.locator("#change-password-status")).to_contain_text("Password changed")

    page = here.page
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#login-error")).to_have_text("Your session has ended. Sign in again.")
    expect(page.locator("#mode-signin")).to_be_checked()
    expect(page.locator("#nick-input")).to_have_value("liam")
    page.fill("#password-input", "changed elsewhere")
    page.press("#password-input", "Enter")
    signed_in(here, "liam")
    for chat in (here, elsewhere):
        chat.assert_no_errors()


def test_a_server_without_guests_says_so(start_server: Any, open_page: Any) -> None:
    server = start_server(web_args=("--no-guests",))
    chat = open_page(server)
    page = chat.page
    submit_login(chat, "guest", "mia")
    expect(page.locator("#login-error")).to_have_text("This server does not allow guests: sign in or create an account.")
    expect(page.locator("#app")).to_be_hidden()
    submit_login(chat, "create", "mia", PASSWORD)
    signed_in(chat, "mia")
    expect(page.locator("#login-error")).to_be_hidden()
    chat.assert_no_errors()
