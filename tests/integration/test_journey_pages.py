"""The visitor's journey in Debian's headless Chromium: a design made on /concevoir (code and QR
code shown), launched by typing its code on /borne (as a USB scanner does: characters then
Enter), followed on /suivi/<order> until delivered with the trades of every step, then seen on
/ligne. A second scan of the same code shows the French refusal on the kiosk.

Saves screenshots of the four pages; with FABRIQUE_UPDATE_SCREENSHOT=1 they replace the ones in
docs/ that the README shows (tests leave the repository untouched otherwise)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from peer_journey import create_design, scan
from peer_survey import Api
from test_survey_page import _missing, browser, wait_until  # noqa: F401  (the fixture)

DOCS = Path(__file__).resolve().parents[2] / "docs"

pytestmark = pytest.mark.skipif(_missing() is not None and os.environ.get("CI") != "true", reason=_missing() or "")


def screenshot(driver, tmp_path: Path, name: str) -> None:
    target = DOCS if os.environ.get("FABRIQUE_UPDATE_SCREENSHOT") == "1" else tmp_path
    assert driver.save_screenshot(str(target / f"journey-{name}.png"))


def image_loaded(driver, element_id: str) -> bool:
    return driver.execute_script(
        "var i = document.getElementById(arguments[0]); return i.complete && i.naturalWidth > 0;", element_id
    )


def test_design_scan_follow_and_the_big_screen(gateway_factory, browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    gw = gateway_factory(name="journey-pages")
    api = Api(gw.http_url)

    # 1. /concevoir on a phone.
    browser.set_window_size(412, 1100)
    browser.get(f"{gw.http_url}/concevoir")
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#models button"), 10, "the models")
    browser.find_element(By.CSS_SELECTOR, "#models button[data-value='Wave']").click()
    browser.find_element(By.ID, "text").send_keys("Léa")
    assert "Léa" in browser.find_element(By.ID, "preview").get_attribute("innerHTML")
    screenshot(browser, tmp_path, "concevoir")
    browser.find_element(By.ID, "create").click()
    wait_until(lambda: browser.find_element(By.ID, "done").is_displayed(), 10, "the code")
    code = browser.find_element(By.ID, "code").text
    assert len(code) == 6
    wait_until(lambda: image_loaded(browser, "qr"), 10, "the QR code image")
    status, design = api.request("GET", f"/api/designs/{code}")
    assert status == 200 and design["model"] == "Wave" and design["text"] == "Léa", design

    # 2. /borne: the scanner types the code and Enter.
    browser.set_window_size(1280, 800)
    browser.get(f"{gw.http_url}/borne")
    field = wait_until(lambda: browser.find_element(By.ID, "code"), 10, "the code field")
    field.send_keys(code.lower() + Keys.ENTER)
    wait_until(lambda: browser.find_element(By.ID, "done").is_displayed(), 15, "the launched order")
    order = browser.find_element(By.ID, "order").text
    assert order.startswith("ORD-")
    wait_until(lambda: image_loaded(browser, "qr"), 10, "the follow QR code")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#trades span")) >= 20
    screenshot(browser, tmp_path, "borne")
    # The same code again: refused in French, nothing launched.
    browser.find_element(By.ID, "next").click()
    browser.find_element(By.ID, "code").send_keys(code + Keys.ENTER)
    error = wait_until(lambda: (e := browser.find_element(By.ID, "error")).is_displayed() and e, 10, "the refusal")
    assert error.get_attribute("data-kind") == "already-launched"
    assert "déjà lancé" in error.text and order in error.text

    # A few more orders, so the big screen has something on every step later.
    for i in range(4):
        assert scan(api, create_design(api, "Hexa", f"Ami {i + 1}")["code"])[0] == 201

    # 3. /suivi/<order> on the phone, live until delivered.
    browser.set_window_size(412, 1800)
    browser.get(f"{gw.http_url}/suivi/{order}")

    # The page re-renders on every event: read it with scripts, not element handles.
    def live_step(steps: str):
        return browser.execute_script(
            "var c = document.querySelector('.step.current');"
            "return !!c && arguments[0].split(',').indexOf(c.dataset.step) >= 0"
            " && c.querySelectorAll('.live div').length > 0;",
            steps,
        )

    # The printer at work makes the best picture; on a slow machine the order may be past it
    # already, and any machine's live values will do.
    try:
        wait_until(lambda: live_step("4"), 15, "the printer's live values at step 4")
    except AssertionError:
        wait_until(lambda: live_step("3,4,5,6,7,8,9"), 60, "a machine's live values")
    screenshot(browser, tmp_path, "suivi")
    wait_until(
        lambda: browser.execute_script("var s = document.getElementById('state'); return s && s.dataset.state;")
        == "Delivered",
        120,
        "delivery",
    )
    assert browser.find_element(By.ID, "delivered").is_displayed()
    steps = browser.execute_script(
        "return Array.from(document.querySelectorAll('.step')).map(function (s) {"
        " return [s.dataset.step, s.className, s.querySelectorAll('.trade').length]; });"
    )
    assert len(steps) == 9
    for number, classes, trades in steps:
        assert "done" in classes and trades > 0, f"step {number}: {classes}, {trades} trades"

    # 4. /ligne on the big screen: the delivered order among the finished ones.
    browser.set_window_size(1600, 900)
    for i in range(6):
        assert scan(api, create_design(api, "Minimal", f"Écran {i + 1}")["code"])[0] == 201
    browser.get(f"{gw.http_url}/ligne")
    wait_until(
        lambda: browser.find_elements(By.CSS_SELECTOR, f"#finished [data-id='{order}']"), 30, "the order on /ligne"
    )
    wait_until(lambda: len(browser.find_elements(By.CSS_SELECTOR, ".cell.busy")) >= 3, 60, "orders on the line")
    screenshot(browser, tmp_path, "ligne")
