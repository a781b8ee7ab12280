"""The web page at / driven in headless Chromium (Debian's chromium + chromedriver), network limited to loopback."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("lancedb")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from serving import Server, build_test_index  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    # CI installs them (make system-deps), so there a missing browser fails instead of skipping.
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"),
        reason="needs Debian's chromium and chromium-driver",
    ),
]


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="unite-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        # only loopback: other hosts fail to resolve, other connections go to a dead proxy (loopback bypasses it)
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--proxy-server=http://127.0.0.1:9",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory, media_dir, encoder, legacy_checkpoint):
    folder = tmp_path_factory.mktemp("web")
    running = Server(build_test_index(folder, media_dir, encoder, legacy_checkpoint), folder / "server.log")
    yield running
    running.stop()


def cards(browser):
    return browser.find_elements(By.CSS_SELECTOR, "#results .card")


def test_type_a_query_see_thumbnails_filter_by_modality(browser, server, media_dir):
    browser.get(server.url + "/")
    wait = WebDriverWait(browser, 30)
    wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "status"), "8 items"))
    browser.find_element(By.ID, "query").send_keys("a cat asleep on a sofa")
    Select(browser.find_element(By.ID, "k")).select_by_visible_text("12")
    browser.find_element(By.ID, "go").click()
    wait.until(lambda _: len(cards(browser)) == 8)
    assert cards(browser)[0].get_attribute("data-id") == "cat.txt"
    assert {c.get_attribute("data-modality") for c in cards(browser)} == {"text", "image", "video"}
    # thumbnails load (blob URLs with a real decoded size), video clips show their time range
    wait.until(
        lambda _: all(
            browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
            for img in browser.find_elements(By.CSS_SELECTOR, "#results img.thumb")
        )
    )
    assert len(browser.find_elements(By.CSS_SELECTOR, "#results img.thumb")) == 6
    times = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#results .badge.time")]
    assert sorted(times) == ["0:00.0–0:03.0", "0:03.0–0:06.0"]

    searches = browser.find_element(By.TAG_NAME, "body").get_attribute("data-searches")
    Select(browser.find_element(By.ID, "modality")).select_by_visible_text("Videos")
    wait.until(lambda _: browser.find_element(By.TAG_NAME, "body").get_attribute("data-searches") != searches)
    assert len(cards(browser)) == 3 and {c.get_attribute("data-modality") for c in cards(browser)} == {"video"}


def test_search_with_an_uploaded_image(browser, server, media_dir):
    browser.get(server.url + "/")
    browser.find_element(By.ID, "query").clear()
    Select(browser.find_element(By.ID, "modality")).select_by_visible_text("Images")
    browser.find_element(By.ID, "file").send_keys(str(Path(media_dir / "b.jpg").resolve()))
    browser.find_element(By.ID, "go").click()
    WebDriverWait(browser, 30).until(lambda _: len(cards(browser)) == 3)
    assert cards(browser)[0].get_attribute("data-id") == "b.jpg"
