"""Apache's mod_auth_openidc signs a person in with portcullis, in headless
Chromium: the protected page sends the browser to portcullis's login and
consent pages and shows the claims the module passes on.

Run by tests/api/oidc.rs with Apache in front of a page of server-side
includes that prints the module's variables. Exits non-zero on the first
broken expectation.

Arguments: PORTCULLIS_URL APACHE_URL SCREENSHOT_DIR AXE_CORE_SCRIPT EMAIL PASSWORD
"""

import sys
import urllib.parse

from selenium.webdriver.common.by import By

from browser import Browser, log

PORTCULLIS, APACHE, SHOTS, AXE_SCRIPT, EMAIL, PASSWORD = sys.argv[1:7]
browser = Browser(SHOTS, AXE_SCRIPT)
driver = browser.driver


def at():
    """Where the browser is: origin and path."""
    u = urllib.parse.urlparse(driver.current_url)
    return f"{u.scheme}://{u.netloc}{u.path}"


def claims():
    """The protected page's table of what mod_auth_openidc passed on."""
    assert at() == f"{APACHE}/protected/", (at(), browser.text("body"))
    return {dd.get_attribute("id"): dd.text for dd in driver.find_elements(By.TAG_NAME, "dd")}


try:
    # Apache sends the browser to portcullis, which asks who it is first.
    driver.get(f"{APACHE}/protected/")
    assert at() == f"{PORTCULLIS}/ui/login", at()
    browser.fill({"email": EMAIL, "password": PASSWORD})

    # Then, once, whether Apache may know it.
    assert at() == f"{PORTCULLIS}/ui/consent", (at(), browser.alert_text())
    page = browser.text()
    for shown in ("Apache", "email", "groups"):
        assert shown in page, page
    browser.check_page("consent")
    browser.click(driver.find_element(By.CSS_SELECTOR, "button[value=allow]"))

    seen = claims()
    log("mod_auth_openidc passed on:", seen)
    assert seen["user"] == EMAIL, seen
    assert seen["email"] == EMAIL, seen
    assert seen["name"] == "Ada Lovelace", seen
    assert seen["groups"] == "staff,wiki", seen
    assert seen["amr"] == "pwd", seen
    assert seen["sub"] and seen["sub"] != EMAIL, seen

    # Apache's own session forgotten: back through portcullis, which knows the
    # browser and the consent, so no page is shown on the way.
    driver.delete_cookie(next(c["name"] for c in driver.get_cookies()
                              if c["name"].startswith("mod_auth_openidc_session")))
    driver.get(f"{APACHE}/protected/")
    assert claims()["email"] == EMAIL

    # The account page lists the grants as sessions of their own.
    driver.get(f"{PORTCULLIS}/ui/account")
    assert "apache (signed in with portcullis)" in browser.text(), browser.text()

    # Signing out at Apache signs out at portcullis (RP-initiated logout with
    # the id_token as hint) and comes back to Apache's page.
    logout = urllib.parse.quote(f"{APACHE}/", safe="")
    driver.get(f"{APACHE}/protected/redirect_uri?logout={logout}")
    assert at() == f"{APACHE}/", (at(), browser.text("body"))
    assert "Signed out" in browser.text("body"), browser.text("body")

    # Nobody is signed in anywhere now: the protected page asks again.
    driver.get(f"{APACHE}/protected/")
    assert at() == f"{PORTCULLIS}/ui/login", at()
    log("pages checked:", ", ".join(browser.checked))
finally:
    browser.quit()
