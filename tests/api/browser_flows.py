"""The web pages in a real browser: headless Chromium driven by Selenium.

Run by tests/api/pages.rs against a real server on port 0, whose clock the
test holds: this script asks for the time and for the clock to move with one
line on stdout ("now", "advance SECONDS") and reads the answer on stdin.
Everything else it says goes to stderr. It exits non-zero on the first
broken expectation.

Arguments: BASE_URL OUTBOX_DIR SCREENSHOT_DIR SETUP_TOKEN AXE_CORE_SCRIPT
"""

import base64
import hashlib
import hmac
import pathlib
import re
import struct
import sys
import urllib.parse

import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from browser import Browser, log

BASE, OUTBOX, SHOTS, SETUP_TOKEN, AXE_SCRIPT = sys.argv[1:6]
PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a lantern of river stones at noon"
ADMIN = "root@example.com"
ADA = "ada@example.com"


def ask(line):
    print(line, flush=True)
    answer = sys.stdin.readline().strip()
    assert answer, f"no answer to {line!r}"
    return answer


def server_now():
    """The server's clock, in seconds."""
    return int(ask("now")) // 1000


def advance(seconds):
    ask(f"advance {seconds}")


def totp(secret_b32, at):
    """RFC 6238: SHA-1, 6 digits, 30-second steps."""
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    mac = hmac.new(key, struct.pack(">Q", at // 30), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def next_code(secret):
    """A code of a time step the server has not seen yet: the clock moves on."""
    advance(30)
    return totp(secret, server_now())


browser = Browser(SHOTS, AXE_SCRIPT)
driver = browser.driver
field, click, fill, alert_text = browser.field, browser.click, browser.fill, browser.alert_text
check_page = browser.check_page
checked_pages = browser.checked


def url(path):
    return BASE + path


def visit(path):
    driver.get(url(path))


def here():
    return urllib.parse.urlparse(driver.current_url).path


def sign_out():
    click(driver.find_element(By.XPATH, "//button[normalize-space()='Sign out' and ancestor::header]"))
    assert here() == "/ui/login", here()


def browser_session():
    """A requests session holding this browser's cookies."""
    s = requests.Session()
    for c in driver.get_cookies():
        s.cookies.set(c["name"], c["value"])
    return s


def newest_mail_link(before):
    """The link of the first mail that was not in the outbox before."""
    outbox = pathlib.Path(OUTBOX)
    import time
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        new = sorted(set(outbox.glob("*.eml")) - before)
        if new:
            text = new[0].read_text()
            found = re.search(r"^(http\S+/ui/reset-password\?token=\S+)$", text, re.M)
            assert found, text
            return found.group(1)
        time.sleep(0.05)
    raise AssertionError("no reset mail arrived")


def outbox_now():
    return set(pathlib.Path(OUTBOX).glob("*.eml"))


try:
    # The first run: the setup link makes the first administrator.
    visit(f"/ui/setup?token={SETUP_TOKEN}")
    assert driver.find_element(By.TAG_NAME, "h1").text == "Create the first administrator"
    check_page("setup")
    fill({"name": "Root", "email": ADMIN, "password": PASSWORD})
    assert here() == "/ui/account", (here(), alert_text(), driver.find_element(By.TAG_NAME, "h1").text)
    assert "admins" in driver.find_element(By.TAG_NAME, "main").text
    r = requests.get(url(f"/ui/setup?token={SETUP_TOKEN}"))
    assert r.status_code == 404, f"the setup link works twice: {r.status_code}"
    visit(f"/ui/setup?token={SETUP_TOKEN}")
    assert "This setup link is not valid" in alert_text(), alert_text()
    check_page("setup-used")
    visit("/ui/account")
    sign_out()

    # Register, then signed in.
    visit("/ui/login")
    check_page("login")
    click(driver.find_element(By.LINK_TEXT, "Create an account"))
    check_page("register")
    fill({"name": "Ada Lovelace", "email": ADA, "password": "short"})
    assert "Check the field" in alert_text(), alert_text()
    assert "at least 12 characters" in driver.find_element(By.ID, "password-error").text
    assert field("email").get_attribute("value") == ADA
    assert field("password").get_attribute("value") == ""
    check_page("register-error")
    fill({"password": PASSWORD})
    assert here() == "/ui/account", (here(), alert_text(), driver.find_element(By.TAG_NAME, "h1").text)
    check_page("account")

    # TOTP enrolment: the code computed from the page's secret.
    click(driver.find_element(By.LINK_TEXT, "Set up two-step verification"))
    assert here() == "/ui/account/totp"
    assert driver.find_elements(By.CSS_SELECTOR, ".qr svg"), "no QR code"
    secret = driver.find_element(By.ID, "totp-secret").text.strip()
    assert re.fullmatch(r"[A-Z2-7]{16,}", secret), secret
    check_page("totp")
    fill({"code": "000000", "password": PASSWORD})
    assert alert_text(), "a wrong code says so"
    assert driver.find_element(By.ID, "totp-secret").text.strip() == secret, "the secret stays"
    fill({"code": next_code(secret), "password": PASSWORD})
    codes = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#backup-codes li")]
    assert len(codes) == 10, codes
    check_page("backup-codes")
    visit("/ui/account")
    # The text, once the page has it (page_source can be read mid-load).
    WebDriverWait(driver, 10).until(
        lambda d: "On: signing in asks for a code" in d.find_element(By.TAG_NAME, "main").text,
        message=f"TOTP is not shown as on: {here()} {alert_text()!r}")
    visit("/ui/admin/audit")
    assert "Only administrators" in alert_text(), alert_text()
    check_page("not-allowed")
    visit("/ui/account")
    sign_out()

    # Sign in with TOTP.
    fill({"email": ADA, "password": PASSWORD})
    assert here() == "/ui/login/mfa", here()
    check_page("login-mfa")
    fill({"code": "123456"})
    assert alert_text(), "a wrong code says so"
    fill({"code": next_code(secret)})
    assert here() == "/ui/account", (here(), alert_text(), driver.find_element(By.TAG_NAME, "h1").text)

    # An API session is listed and revoked from the page; its token is refused at once.
    api = requests.post(url("/auth/login"), json={"email": ADA, "password": PASSWORD}).json()
    pair = requests.post(url("/auth/login/mfa"), json={"mfa_token": api["mfa_token"], "code": codes[0]}).json()
    bearer = {"Authorization": f"Bearer {pair['access_token']}"}
    assert requests.get(url("/auth/me"), headers=bearer).status_code == 200
    listed = requests.get(url("/auth/sessions"), headers=bearer).json()["sessions"]
    assert {s["kind"] for s in listed} == {"api", "browser"}, listed
    browser_row = next(s for s in listed if s["kind"] == "browser")
    assert browser_row["amr"] == ["pwd", "otp"], browser_row
    visit("/ui/account")
    row = driver.find_element(By.ID, f"session-{pair['session_id']}")
    assert "App (API)" in row.text, row.text
    click(row.find_element(By.TAG_NAME, "button"))
    assert here() == "/ui/account"
    assert "That session was signed out" in driver.page_source
    assert requests.get(url("/auth/me"), headers=bearer).status_code == 401, "revoked token still works"

    # A POST without its form token changes nothing; nor does one from another origin.
    s = browser_session()
    r = s.post(url("/ui/account"), data={"action": "logout_all"})
    assert r.status_code == 403, r.status_code
    token = re.search(r'name="csrf_token" value="([^"]+)"', s.get(url("/ui/account")).text).group(1)
    r = s.post(url("/ui/account"), data={"action": "logout_all", "csrf_token": token},
               headers={"Origin": "https://evil.example"})
    assert r.status_code == 403, r.status_code
    r = s.post(url("/ui/account"), data={"action": "logout_all", "csrf_token": "x" * 43})
    assert r.status_code == 403, r.status_code
    visit("/ui/account")
    assert here() == "/ui/account", "a forged form signed the browser out"

    # Forgot password: the link from the outbox mail; the new password works,
    # every old session is gone.
    other = requests.post(url("/auth/login/mfa"), json={
        "mfa_token": requests.post(url("/auth/login"), json={"email": ADA, "password": PASSWORD}).json()["mfa_token"],
        "code": codes[1]}).json()
    other_bearer = {"Authorization": f"Bearer {other['access_token']}"}
    old_cookies = browser_session()
    sign_out()
    click(driver.find_element(By.LINK_TEXT, "Forgot your password?"))
    check_page("forgot-password")
    before = outbox_now()
    fill({"email": ADA})
    assert "If an account exists" in driver.page_source
    check_page("forgot-password-sent")
    link = newest_mail_link(before)
    assert link.startswith(BASE + "/ui/reset-password?token="), link
    driver.get(link)
    check_page("reset-password")
    fill({"new_password": NEW_PASSWORD})
    assert "Your password has been changed" in driver.page_source
    check_page("reset-password-done")
    assert requests.get(url("/auth/me"), headers=other_bearer).status_code == 401, "an API session outlived the reset"
    r = old_cookies.get(url("/ui/account"), allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"].startswith("/ui/login"), "a browser session outlived the reset"
    visit("/ui/login")
    fill({"email": ADA, "password": PASSWORD})
    assert here() == "/ui/login", "the old password still works"
    fill({"email": ADA, "password": NEW_PASSWORD})
    fill({"code": next_code(secret)})
    assert here() == "/ui/account", (here(), alert_text(), driver.find_element(By.TAG_NAME, "h1").text)
    sign_out()

    # `rd` to another site is ignored; one on this host is followed.
    visit("/ui/login?rd=" + urllib.parse.quote("https://evil.example/steal"))
    assert field("rd").get_attribute("value") == ""
    fill({"email": ADMIN, "password": PASSWORD})
    assert here() == "/ui/account" and driver.current_url.startswith(BASE), driver.current_url
    sign_out()
    target = url("/ui/admin/users")
    visit("/ui/login?rd=" + urllib.parse.quote(target))
    fill({"email": ADMIN, "password": PASSWORD})
    assert driver.current_url == target, driver.current_url
    check_page("admin-users")

    # The admin gives Ada groups and resets her lost second factor.
    ada_row = driver.find_element(By.XPATH, f"//tr[.//strong[text()='{ADA}']]")
    groups = ada_row.find_element(By.NAME, "groups")
    groups.clear()
    groups.send_keys("wiki, ops")
    click(ada_row.find_element(By.XPATH, ".//button[text()='Save']"))
    assert "Groups saved" in driver.page_source
    ada_row = driver.find_element(By.XPATH, f"//tr[.//strong[text()='{ADA}']]")
    assert ada_row.find_element(By.NAME, "groups").get_attribute("value") == "ops, wiki"
    click(ada_row.find_element(By.XPATH, ".//button[text()='Reset 2-step']"))
    assert "Two-step verification is off for that account" in driver.page_source
    pair = requests.post(url("/auth/login"), json={"email": ADA, "password": NEW_PASSWORD}).json()
    me = requests.get(url("/auth/me"), headers={"Authorization": f"Bearer {pair['access_token']}"}).json()
    assert me["groups"] == ["ops", "wiki"] and me["mfa_enabled"] is False, me

    # Wrong password: the message, the email kept, status 401.
    sign_out()
    fill({"email": ADA, "password": "not the password at all"})
    assert "Wrong email or password" in alert_text(), alert_text()
    assert field("email").get_attribute("value") == ADA
    assert field("password").get_attribute("value") == ""
    check_page("login-error")

    # The admin finds that failed login in the audit page.
    fill({"email": ADMIN, "password": PASSWORD})
    visit("/ui/admin/audit?action=login_failed&user=" + urllib.parse.quote(ADA))
    table = driver.find_element(By.TAG_NAME, "table").text
    assert "login_failed" in table and "via: web" in table and "reason: wrong_password" in table, table
    assert "The chain is intact" in driver.find_element(By.ID, "chain").text
    check_page("admin-audit")
    visit("/ui/admin/rate-limits?key=127.0.0.1")
    check_page("admin-rate-limits")
    sign_out()

    # Statuses for scripts and proxies, the sixth wrong password limited
    # (after the windows of the failures above have passed).
    advance(16 * 60)
    s = requests.Session()
    page = s.get(url("/ui/login"))
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    statuses = []
    for _ in range(6):
        r = s.post(url("/ui/login"), data={"email": "bob@example.com", "password": "wrong wrong wrong",
                                           "csrf_token": token}, allow_redirects=False)
        statuses.append(r.status_code)
    assert statuses == [401] * 5 + [429], statuses
    assert int(r.headers["Retry-After"]) > 0 and "Too many attempts" in r.text, r.headers
    assert r.headers["Content-Type"].startswith("text/html")
    visit("/ui/login")
    fill({"email": "bob@example.com", "password": "wrong wrong wrong"})
    assert "Too many attempts" in alert_text(), alert_text()
    check_page("login-limited")
    r = s.post(url("/ui/login"), data={"email": "x@example.com", "password": "p"}, allow_redirects=False)
    assert r.status_code == 403, f"a form without its token: {r.status_code}"
    log("pages checked:", ", ".join(checked_pages))
finally:
    driver.quit()
