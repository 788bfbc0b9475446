"""The `/survey` page in Debian's headless Chromium (selenium + /usr/bin/chromedriver): filled in
by clicks only, submitted, the thank-you shown then reset, the answer counted in /api/stats.
Saves a screenshot of the filled-in page; with FABRIQUE_UPDATE_SCREENSHOT=1 it replaces
docs/survey-page.png, the one the README shows (tests leave the repository untouched otherwise)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from peer_survey import Api

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
README_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "survey-page.png"


def _missing() -> str | None:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        return "install the Debian packages chromium and chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (tests/requirements.txt)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None and os.environ.get("CI") != "true", reason=_missing() or "")


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="fabrique-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        # A 10-inch tablet in landscape.
        "--window-size=1280,800",
        "--lang=fr-FR",
    ]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_the_page_is_filled_in_by_taps_and_the_answer_is_counted(gateway_factory, browser, tmp_path):
    from selenium.webdriver.common.by import By

    gw = gateway_factory(name="survey-page")
    api = Api(gw.http_url)
    assert api.stats()["survey"]["responses"] == 0

    browser.get(f"{gw.http_url}/survey")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "fr"
    submit = browser.find_element(By.ID, "submit")
    assert not submit.is_enabled(), "nothing answered yet"
    # Large touch targets: every choice at least 64 px high.
    for button in browser.find_elements(By.CSS_SELECTOR, ".choices button"):
        assert button.size["height"] >= 64, button.text

    def tap(field: str, value: str):
        button = browser.find_element(By.CSS_SELECTOR, f'.question[data-field="{field}"] button[data-value="{value}"]')
        button.click()
        assert button.get_attribute("aria-pressed") == "true"

    tap("audience", "job_seeker")
    tap("audience", "high_school")  # changing one's mind: one answer per question
    tap("satisfaction", "4")
    assert not submit.is_enabled(), "still one question to answer"
    tap("view_changed", "true")
    pressed = browser.find_elements(By.CSS_SELECTOR, '.question[data-field="audience"] button[aria-pressed="true"]')
    assert [b.get_attribute("data-value") for b in pressed] == ["high_school"]
    assert submit.is_enabled()
    # The optional trades question: several taps, one toggled off again.
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#trades button"), 10, "the trades question")
    for trade in ["roboticien", "technicien-metrologie", "chef-produit", "roboticien"]:
        browser.find_element(By.CSS_SELECTOR, f'#trades button[data-value="{trade}"]').click()
    screenshot = README_SCREENSHOT if os.environ.get("FABRIQUE_UPDATE_SCREENSHOT") == "1" else tmp_path / "survey-page.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000
    submit.click()

    thanks = browser.find_element(By.ID, "thanks")
    wait_until(thanks.is_displayed, 10, "the thank-you screen")
    assert "Merci" in thanks.text
    stats = api.stats()
    assert stats["survey"]["responses"] == 1
    high_school = stats["survey"]["by_audience"]["high_school"]
    assert (high_school["responses"], high_school["satisfied"], high_school["view_changed"]) == (1, 1, 1)
    chosen = {t for t, v in stats["survey"]["trades"].items() if v["count"]}
    assert chosen == {"technicien-metrologie", "chef-produit"}

    # The page resets itself for the next visitor.
    form = browser.find_element(By.ID, "form")
    wait_until(form.is_displayed, 15, "the form again")
    assert not browser.find_element(By.ID, "submit").is_enabled()
    assert not browser.find_elements(By.CSS_SELECTOR, 'button[aria-pressed="true"]')
