"""Passkeys on the pages in a real browser: headless Chromium driven by
Selenium, with WebDriver's virtual authenticator (CTAP2, built in, resident
keys, user verification that always succeeds).

Run by tests/api/passkey_pages.rs against a real server whose relying party
is `localhost`, so BASE_URL is http://localhost:PORT (browsers refuse
WebAuthn on an IP address). Progress goes to stderr; stdout is kept for the
clock lines of the test's runner. It exits non-zero on the first broken
expectation.

Arguments: BASE_URL SCREENSHOT_DIR AXE_CORE_SCRIPT EMAIL PASSWORD
"""

import sys
import urllib.parse

from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.virtual_authenticator import VirtualAuthenticatorOptions
from selenium.webdriver.support.ui import WebDriverWait

from browser import Browser, log

BASE, SHOTS, AXE_SCRIPT, EMAIL, PASSWORD = sys.argv[1:6]
PASSKEY_NAME = "Work laptop"

browser = Browser(SHOTS, AXE_SCRIPT)
driver = browser.driver
fill, alert_text, check_page = browser.fill, browser.alert_text, browser.check_page


def visit(path):
    driver.get(BASE + path)


def here():
    return urllib.parse.urlparse(driver.current_url).path


def main_text():
    return driver.find_element(By.TAG_NAME, "main").text


def where():
    """Where the browser is, for a failure's message."""
    return f"at {driver.current_url}, alert {alert_text()!r}"


def sign_out():
    browser.click(driver.find_element(
        By.XPATH, "//button[normalize-space()='Sign out' and ancestor::header]"))
    assert here() == "/ui/login", where()


def shown(element_id):
    """The element `element_id` once the page's script has shown it."""
    try:
        return WebDriverWait(driver, 20).until(
            lambda d: next((e for e in d.find_elements(By.ID, element_id) if e.is_displayed()), False))
    except TimeoutException:
        raise AssertionError(f"no #{element_id} shown {where()}") from None


def press(element_id):
    """Clicks the passkey button `element_id` and waits for the page that
    follows the ceremony. The script's own error, if it shows one instead,
    is the failure."""
    button = shown(element_id)
    old = driver.find_element(By.TAG_NAME, "html")

    def outcome(d):
        try:
            old.is_enabled()
        except WebDriverException:
            return "replaced"
        try:
            error = d.find_elements(By.ID, "passkey-error")
            if error and error[0].is_displayed() and error[0].text:
                return "error"
        except WebDriverException:
            # The page went while it was being read: the next look says which.
            pass
        return False

    button.click()
    try:
        result = WebDriverWait(driver, 60).until(outcome)
    except TimeoutException:
        raise AssertionError(f"nothing happened after #{element_id} {where()}") from None
    if result == "error":
        message = driver.find_element(By.ID, "passkey-error").text
        console = [entry["message"] for entry in driver.get_log("browser")]
        raise AssertionError(f"#{element_id} said {message!r} {where()}; the console: {console}")
    WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")


def status_text():
    found = driver.find_elements(By.CSS_SELECTOR, "[role=status]")
    return found[0].text if found else ""


def passkey_items():
    return driver.find_elements(By.CSS_SELECTOR, "#passkeys li[id^=passkey-]")


def signed_in_as_account():
    assert here() == "/ui/account", where()
    assert EMAIL in main_text(), f"the account page does not show {EMAIL}"


try:
    assert urllib.parse.urlparse(BASE).hostname == "localhost", f"WebAuthn needs a domain name: {BASE}"
    # A built-in authenticator that keeps discoverable credentials, verifies
    # its user and, consenting, answers without a touch.
    driver.add_virtual_authenticator(VirtualAuthenticatorOptions(
        protocol=VirtualAuthenticatorOptions.Protocol.CTAP2,
        transport=VirtualAuthenticatorOptions.Transport.INTERNAL,
        has_resident_key=True,
        has_user_verification=True,
        is_user_verified=True,
        is_user_consenting=True,
    ))
    assert driver.get_credentials() == [], "a new authenticator holds credentials"

    log("passkeys: an account, signed in with its password")
    visit("/ui/register")
    fill({"name": "Grace Hopper", "email": EMAIL, "password": PASSWORD})
    assert here() == "/ui/account", where()
    sign_out()
    fill({"email": EMAIL, "password": PASSWORD})
    signed_in_as_account()

    log("passkeys: added on /ui/account/passkeys")
    section = driver.find_element(By.XPATH, "//section[h2[normalize-space()='Passkeys']]")
    assert "None yet" in section.text, section.text
    browser.click(section.find_element(By.CSS_SELECTOR, "a[href='/ui/account/passkeys']"))
    assert here() == "/ui/account/passkeys", where()
    assert "No passkeys yet." in driver.find_element(By.ID, "passkeys").text
    shown("add-passkey")
    name = driver.find_element(By.ID, "passkey-name")
    name.clear()
    name.send_keys(PASSKEY_NAME)
    press("add-passkey")
    assert driver.current_url == BASE + "/ui/account/passkeys?done=added", where()
    assert "Your passkey was added" in status_text(), status_text()
    items = passkey_items()
    assert len(items) == 1, [i.text for i in items]
    assert PASSKEY_NAME in items[0].text and "not used yet" in items[0].text, items[0].text
    credentials = driver.get_credentials()
    assert len(credentials) == 1, credentials
    assert credentials[0].is_resident_credential, "the passkey is not discoverable"
    assert credentials[0].rp_id == "localhost", credentials[0].rp_id
    check_page("passkeys")
    visit("/ui/account")
    section = driver.find_element(By.XPATH, "//section[h2[normalize-space()='Passkeys']]")
    assert "1 passkey." in section.text, section.text

    log("passkeys: signed in with the passkey alone")
    sign_out()
    shown("passkey-sign-in")
    assert browser.field("email").get_attribute("value") == ""
    check_page("login-passkey")
    press("passkey-sign-in")
    signed_in_as_account()

    log("passkeys: the second step after the password")
    sign_out()
    fill({"email": EMAIL, "password": PASSWORD})
    assert here() == "/ui/login/mfa", where()
    assert not driver.find_elements(By.NAME, "code"), "a code field for an account without TOTP"
    assert EMAIL in main_text(), main_text()
    shown("use-passkey")
    check_page("login-mfa-passkey")
    press("use-passkey")
    signed_in_as_account()

    log("passkeys: last use shown, then removed")
    visit("/ui/account/passkeys")
    items = passkey_items()
    assert len(items) == 1, [i.text for i in items]
    assert "last used" in items[0].text and "not used yet" not in items[0].text, items[0].text
    remove = items[0].find_element(By.XPATH, ".//button[normalize-space()='Remove']")
    browser.click(remove)
    assert driver.current_url == BASE + "/ui/account/passkeys?done=removed", where()
    assert "That passkey was removed" in status_text(), status_text()
    assert not passkey_items(), "a removed passkey is still listed"
    assert "No passkeys yet." in driver.find_element(By.ID, "passkeys").text
    assert len(driver.get_credentials()) == 1, "the authenticator still holds its credential"

    log("passkeys: a credential the server no longer knows is refused")
    sign_out()
    press("passkey-sign-in")
    assert here() == "/ui/login", where()
    assert "That passkey did not work" in alert_text(), alert_text()
    check_page("login-passkey-refused")
    visit("/ui/account")
    assert here() == "/ui/login", f"signed in with a removed passkey: {where()}"

    log("passkeys: without one, the password alone signs in again")
    # The login page itself: the one above sends the browser on to
    # public_url, which names the server by its IP address.
    visit("/ui/login")
    fill({"email": EMAIL, "password": PASSWORD})
    signed_in_as_account()
    log("passkey pages checked:", ", ".join(browser.checked))
finally:
    driver.quit()
