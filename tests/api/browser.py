"""Headless Chromium for the page tests, and what every such test does with it:
follow a click to the next page, fill a form, read its alert, and check a
page (screenshots light and dark at desktop width and 320 px, axe-core with no
serious or critical violation, under 30 KB, nothing wider than 320 px)."""

import base64
import pathlib
import sys

from axe_selenium_python import Axe
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def log(*args):
    print(*args, file=sys.stderr, flush=True)


class Browser:
    def __init__(self, shots, axe_script):
        self.shots = pathlib.Path(shots)
        self.shots.mkdir(parents=True, exist_ok=True)
        self.axe_script = axe_script
        self.checked = []
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
            "--window-size=1280,900", "--lang=en-US",
        ]:
            options.add_argument(flag)
        self.driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
        self.driver.set_page_load_timeout(30)

    def quit(self):
        self.driver.quit()

    def field(self, name):
        return self.driver.find_element(By.NAME, name)

    def text(self, tag="main"):
        return self.driver.find_element(By.TAG_NAME, tag).text

    def alert_text(self):
        found = self.driver.find_elements(By.CSS_SELECTOR, "[role=alert]")
        return found[0].text if found else ""

    def click(self, element):
        """Clicks a link or button and waits for the next page."""
        driver = self.driver
        old = driver.find_element(By.TAG_NAME, "html")
        before = driver.current_url
        element.click()

        def replaced(_):
            # The old page's element is gone. While the new page comes in, Chrome
            # may answer with a plain WebDriverException rather than a stale
            # element one: either means it was replaced.
            try:
                old.is_enabled()
                return False
            except WebDriverException:
                return True

        try:
            WebDriverWait(driver, 60).until(replaced)
            WebDriverWait(driver, 60).until(
                lambda d: d.execute_script("return document.readyState") == "complete")
        except TimeoutException:
            log(f"no new page after a click on {before}: now at {driver.current_url}, "
                f"title {driver.title!r}, alert {self.alert_text()!r}")
            raise

    def fill(self, values, button=None):
        """Types into the named fields of one form and sends it."""
        element = None
        for name, value in values.items():
            element = self.field(name)
            element.clear()
            element.send_keys(value)
        form = element.find_element(By.XPATH, "./ancestor::form")
        self.click(form.find_element(By.CSS_SELECTOR, button or "button[type=submit]"))

    def emulate(self, width, dark):
        self.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
            "features": [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]})
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": 800 if width < 600 else 900,
            "deviceScaleFactor": 1, "mobile": width < 600})

    def check_page(self, name):
        """Screenshots (light, dark; desktop, 320 px), axe-core with no serious or
        critical violation, size under 30 KB, nothing wider than 320 px."""
        driver = self.driver
        html = driver.execute_script("return document.documentElement.outerHTML")
        size = len(html.encode())
        assert size < 30_000, f"{name}: {size} bytes"
        log(f"{name}: {size} bytes")
        for width in (1280, 320):
            for dark in (False, True):
                self.emulate(width, dark)
                shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
                    "format": "png", "captureBeyondViewport": True})
                variant = f"{'desktop' if width > 600 else '320px'}-{'dark' if dark else 'light'}"
                (self.shots / f"{name}-{variant}.png").write_bytes(base64.b64decode(shot["data"]))
                if width == 320:
                    overflow = driver.execute_script(
                        "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
                    assert overflow <= 0, f"{name} at 320 px scrolls sideways by {overflow} px"
                if width == 1280:
                    axe = Axe(driver, script_url=self.axe_script)
                    axe.inject()
                    results = axe.run()
                    bad = [v for v in results["violations"] if v["impact"] in ("serious", "critical")]
                    assert not bad, f"{name} ({variant}): " + "; ".join(
                        f"{v['id']}: {v['help']} ({[n['target'] for n in v['nodes']][:3]})" for v in bad)
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        self.emulate(1280, False)
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        self.checked.append(name)
