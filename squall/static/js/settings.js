// The settings panel: a native modal <dialog> opened from the gear in the top
// bar. The browser gives it what a dialog needs: focus moves in and stays in
// (the rest of the page is inert), Escape closes it, and it is labelled by its
// heading. It holds the mention e-mail address (GET/PATCH /api/me), the password
// change (accounts only), desktop notifications and "Sign out".
//
// The panel owns no session: `account` lends it one.
//   account.session()        → {nick, token, registered}
//   account.update(changes)  — the server said something new (registered, token)
//   account.signOut()        — the reader pressed "Sign out"
//   account.sessionEnded()   — the server no longer knows our token

import { ApiError, changePassword, fetchMe, saveEmail } from "./api.js";
import { showFieldError } from "./ui.js";

function byId(id) {
  return document.getElementById(id);
}

export class SettingsPanel {
  constructor(translator, account) {
    this.t = translator;
    this.account = account;
    this.dialog = byId("settings");
    this.opener = byId("settings-button");
    this.who = byId("settings-who");
    this.emailForm = byId("email-form");
    this.emailInput = byId("email-input");
    this.emailError = byId("email-error");
    this.emailStatus = byId("email-status");
    this.emailSave = byId("email-save");
    this.passwordForm = byId("change-password-form");
    this.currentPassword = byId("current-password");
    this.currentPasswordError = byId("current-password-error");
    this.newPassword = byId("new-password");
    this.newPasswordError = byId("new-password-error");
    this.passwordStatus = byId("change-password-status");
    this.passwordSubmit = byId("change-password-submit");
    this.notifyStatus = byId("notify-status");
    this.notifyButton = byId("notify-button");
    this.signOutButton = byId("signout-button");
    this._opened = 0; // counts openings, so that a late answer for an earlier one is dropped
    // Settles (never rejects) when the password change in flight, if any, has its answer.
    this.passwordChange = Promise.resolve();
  }

  bind() {
    this.opener.addEventListener("click", () => this.open());
    byId("settings-close").addEventListener("click", () => this.close());
    this.dialog.addEventListener("close", () => this.opener.focus());
    this.emailForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.saveEmail();
    });
    this.passwordForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.changePassword();
    });
    this.notifyButton.addEventListener("click", async () => {
      try {
        await Notification.requestPermission();
      } finally {
        this.renderNotifications();
      }
    });
    this.signOutButton.addEventListener("click", () => {
      this.signOutButton.disabled = true;
      this.account.signOut();
    });
  }

  setTranslator(translator) {
    this.t = translator;
    if (this.isOpen) this.renderWho();
    this.renderNotifications();
  }

  get isOpen() {
    return this.dialog.open;
  }

  open() {
    if (this.isOpen) return;
    const opening = ++this._opened;
    this.signOutButton.disabled = false;
    this.emailForm.reset();
    this.passwordForm.reset();
    this.clearStatus();
    this.renderWho();
    this.renderNotifications();
    this.dialog.showModal();
    this.load(opening);
  }

  close() {
    if (this.isOpen) this.dialog.close();
  }

  clearStatus() {
    for (const [input, line] of [
      [this.emailInput, this.emailError],
      [this.currentPassword, this.currentPasswordError],
      [this.newPassword, this.newPasswordError],
    ]) showFieldError(input, line, "");
    this.emailStatus.textContent = "";
    this.passwordStatus.textContent = "";
  }

  renderWho() {
    const { nick, registered } = this.account.session();
    this.who.textContent = this.t.t(registered ? "settings.who.registered" : "settings.who.guest", { nick });
    this.passwordForm.hidden = !registered;
  }

  renderNotifications() {
    const supported = "Notification" in window;
    const state = supported ? Notification.permission : "unsupported";
    this.notifyStatus.textContent = this.t.t(`notify.state.${state}`);
    this.notifyButton.hidden = state !== "default";
  }

  async load(opening) {
    this.setBusy(this.emailSave, this.emailInput, true);
    this.emailStatus.textContent = this.t.t("settings.loading");
    try {
      const me = await fetchMe(this.account.session().token);
      if (opening !== this._opened) return;
      this.emailInput.value = me.email ?? "";
      this.emailStatus.textContent = "";
      if (typeof me.registered === "boolean") {
        this.account.update({ registered: me.registered });
        this.renderWho();
      }
    } catch (error) {
      if (opening !== this._opened) return;
      this.emailStatus.textContent = "";
      if (this.ended(error)) return;
      this.emailError.hidden = false;
      this.emailError.textContent = this.t.t("settings.error.load", { reason: this.reason(error) });
    } finally {
      if (opening === this._opened) this.setBusy(this.emailSave, this.emailInput, false);
    }
  }

  async saveEmail() {
    const email = this.emailInput.value.trim() || null;
    showFieldError(this.emailInput, this.emailError, "");
    this.emailStatus.textContent = this.t.t("settings.saving");
    this.setBusy(this.emailSave, this.emailInput, true);
    try {
      const saved = await saveEmail(this.account.session().token, email);
      this.emailInput.value = saved.email ?? "";
      this.emailStatus.textContent = saved.email
        ? this.t.t("settings.email.saved", { email: saved.email })
        : this.t.t("settings.email.removed");
    } catch (error) {
      this.emailStatus.textContent = "";
      if (this.ended(error)) return;
      const text = error instanceof ApiError && error.code === "bad_email"
        ? this.t.t("settings.email.bad_email")
        : this.reasonText(error);
      showFieldError(this.emailInput, this.emailError, text);
      this.emailInput.focus();
    } finally {
      this.setBusy(this.emailSave, this.emailInput, false);
    }
  }

  changePassword() {
    this.passwordChange = this._changePassword();
    return this.passwordChange;
  }

  async _changePassword() {
    const current = this.currentPassword.value;
    const next = this.newPassword.value;
    showFieldError(this.currentPassword, this.currentPasswordError, "");
    showFieldError(this.newPassword, this.newPasswordError, "");
    this.passwordStatus.textContent = "";
    if (!current) {
      showFieldError(this.currentPassword, this.currentPasswordError, this.t.t("settings.password.required"));
      this.currentPassword.focus();
      return;
    }
    this.passwordStatus.textContent = this.t.t("settings.password.changing");
    this.passwordSubmit.disabled = true;
    try {
      const session = await changePassword(this.account.session().token, current, next);
      this.account.update({ token: session.token });
      this.passwordForm.reset();
      this.passwordStatus.textContent = this.t.t("settings.password.changed");
    } catch (error) {
      this.passwordStatus.textContent = "";
      if (error instanceof ApiError && error.code === "bad_credentials") {
        showFieldError(this.currentPassword, this.currentPasswordError, this.t.t("settings.password.bad_credentials"));
        this.currentPassword.focus();
      } else if (error instanceof ApiError && error.code === "weak_password") {
        showFieldError(this.newPassword, this.newPasswordError, this.t.t("login.error.weak_password"));
        this.newPassword.focus();
      } else if (!this.ended(error)) {
        showFieldError(this.newPassword, this.newPasswordError, this.reasonText(error));
      }
    } finally {
      this.passwordSubmit.disabled = false;
    }
  }

  /** True, having handed over to the sign-in screen, when the server no longer knows our token. */
  ended(error) {
    if (!(error instanceof ApiError) || error.status !== 401 || error.code === "bad_credentials") return false;
    this.close();
    this.account.sessionEnded();
    return true;
  }

  reason(error) {
    if (!(error instanceof ApiError)) return this.t.t("settings.error.network");
    return error.reason || error.code;
  }

  reasonText(error) {
    if (!(error instanceof ApiError)) return this.t.t("settings.error.network");
    if (error.code === "rate_limited") {
      return this.t.t("login.error.rate_limited", { seconds: Math.ceil(error.retryAfter ?? 1) });
    }
    return this.t.t("settings.error.unknown", { reason: error.reason || error.code });
  }

  setBusy(button, input, busy) {
    button.disabled = busy;
    input.readOnly = busy;
  }
}
