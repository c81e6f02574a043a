"""The drawing page of `ptx serve` in real headless Chromium (Debian's), driven by selenium: strokes
drawn with pointer events are answered as `ptx predict` answers the same canvas picture."""
from __future__ import annotations

import pytest

import browser
import serving
from ptx.infer import load

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))


@pytest.fixture(scope="module")
def page(runs):
    root = runs.ready("convnet", "gru-classifier")
    with serving.running(root, "convnet", "gru-classifier") as server, browser.chromium() as driver:
        yield server, driver, root


@pytest.mark.parametrize("strokes", [browser.ONE, browser.SEVEN, browser.ZERO], ids=["one", "seven", "zero"])
def test_a_drawn_digit_gets_the_label_ptx_predict_gives_the_canvas_picture(page, tmp_path, strokes):
    server, driver, root = page
    browser.open_page(driver, server.url + "/", "convnet")
    shown = browser.draw(driver, strokes)
    picture = tmp_path / "canvas.png"
    picture.write_bytes(browser.pad_png(driver))
    expected = load("convnet", root=root).predict(str(picture))[0]
    assert shown == expected.label_name
    top = browser.bars(driver)
    assert len(top) == 3 and top[0][0] == shown
    assert top[0][1] == pytest.approx(float(expected.probabilities.max()), abs=1e-3)


def test_a_drawn_one_reads_as_one(page):
    server, driver, _ = page
    browser.open_page(driver, server.url + "/", "convnet")
    assert browser.draw(driver, browser.ONE) == "1"
    from selenium.webdriver.common.by import By

    # The top label's bar is drawn, as wide as its probability says (a bar was once invisible).
    fill, track = (driver.find_element(By.CSS_SELECTOR, f"#bars .bar .{part}") for part in ("fill", "track"))
    probability = browser.bars(driver)[0][1]
    assert fill.size["width"] == pytest.approx(probability * track.size["width"], abs=2)


def test_a_word_model_gets_a_text_field_and_its_answer(page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, driver, root = page
    browser.open_page(driver, server.url + "/", "gru-classifier")
    assert not driver.find_element(By.ID, "pad").is_displayed()
    field = driver.find_element(By.ID, "words")
    field.send_keys("bonjour")
    driver.find_element(By.ID, "send").click()
    label = driver.find_element(By.ID, "label")
    WebDriverWait(driver, browser.PAGE_TIMEOUT_S).until(lambda d: label.text or d.find_element(By.ID, "error").text)
    assert label.text == load("gru-classifier", root=root).predict("bonjour")[0].label_name
