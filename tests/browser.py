"""Headless Chromium driven by selenium, for the drawing page of `ptx serve`: Debian's chromium and
chromium-driver (scripts/setup.sh installs them as root); nothing is downloaded at run time.

Shared by tests/test_serve_page.py and scripts/screenshot_page.py."""
from __future__ import annotations

import base64
import contextlib
import shutil
import tempfile

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver",)
PAGE_TIMEOUT_S = 30


def missing() -> str | None:
    """Why a browser test cannot run here, or None when it can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if not any(shutil.which(b) for b in BROWSERS):
        return "no Chromium here (as root, scripts/setup.sh installs Debian's chromium and chromium-driver)"
    if not any(shutil.which(d) for d in DRIVERS):
        return "no chromedriver here (as root, scripts/setup.sh installs Debian's chromium-driver)"
    return None


@contextlib.contextmanager
def chromium(width: int = 900, height: int = 760):
    """A headless Chromium; always quit, whatever happens in the block (quit stops the browser and
    its driver by their own processes)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = next(shutil.which(b) for b in BROWSERS if shutil.which(b))
    profile = tempfile.TemporaryDirectory(prefix="ptx-chromium-")
    # --no-sandbox: containers run as root, where Chromium's sandbox refuses to start. The rest keep
    # the browser to the page under test: a fresh profile each time, and none of its own traffic
    # (first-run, component and sync fetches, QUIC) on a machine that may have no network.
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={width},{height}", "--force-device-scale-factor=1", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={profile.name}"):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
        try:
            driver.set_page_load_timeout(PAGE_TIMEOUT_S)
            driver.set_script_timeout(PAGE_TIMEOUT_S)
            yield driver
        finally:
            driver.quit()
    finally:
        profile.cleanup()


def open_page(driver, url: str, model: str) -> None:
    """Load the page and pick ``model``; returns once its pad or text field shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, PAGE_TIMEOUT_S)
    wait.until(lambda d: any(o.text == model for o in d.find_elements(By.CSS_SELECTOR, "#model option")))
    Select(driver.find_element(By.ID, "model")).select_by_visible_text(model)
    wait.until(ready.visibility_of_any_elements_located((By.CSS_SELECTOR, "#pad, #words")))


def draw(driver, strokes: list[list[tuple[float, float]]]) -> str:
    """Draw ``strokes`` (points as fractions of the pad's width and height) with pointer events, as
    a mouse would, and wait for the page's answer. Returns the label it shows."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    pad = driver.find_element(By.ID, "pad")
    driver.find_element(By.ID, "clear").click()
    size = pad.size
    for stroke in strokes:
        actions = ActionChains(driver, duration=10)
        # Offsets are from the element's centre in Selenium 4.
        points = [(round((x - 0.5) * size["width"]), round((y - 0.5) * size["height"])) for x, y in stroke]
        actions.move_to_element_with_offset(pad, *points[0]).click_and_hold()
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            actions.move_by_offset(x1 - x0, y1 - y0)
        actions.release().perform()
    label = driver.find_element(By.ID, "label")
    WebDriverWait(driver, PAGE_TIMEOUT_S).until(
        lambda d: label.text or d.find_element(By.ID, "error").text)
    error = driver.find_element(By.ID, "error").text
    if error:
        raise AssertionError(f"the page shows an error: {error}")
    return label.text


def pad_png(driver) -> bytes:
    """The pad's picture as the page sends it (a PNG of the canvas)."""
    url = driver.execute_script("return document.getElementById('pad').toDataURL('image/png');")
    return base64.b64decode(url.split(",", 1)[1])


def bars(driver) -> list[tuple[str, float]]:
    """The top labels the page shows, with their probabilities."""
    from selenium.webdriver.common.by import By

    return [(row.find_element(By.CLASS_NAME, "name").text, float(row.find_element(By.CLASS_NAME, "p").text))
            for row in driver.find_elements(By.CSS_SELECTOR, "#bars .bar")]


# Digits as pointer strokes, in fractions of the pad: a 1 (one down stroke, a small flag), a 7 and
# a 0, drawn as a person with a mouse would.
ONE = [[(0.42, 0.30), (0.52, 0.18), (0.52, 0.50), (0.52, 0.82)]]
SEVEN = [[(0.28, 0.22), (0.50, 0.22), (0.72, 0.22), (0.60, 0.45), (0.50, 0.65), (0.44, 0.84)]]
ZERO = [[(0.50, 0.16), (0.34, 0.26), (0.28, 0.50), (0.34, 0.74), (0.50, 0.84), (0.66, 0.74), (0.72, 0.50),
         (0.66, 0.26), (0.50, 0.16)]]
