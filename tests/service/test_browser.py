"""The investigator's page in a real browser: Debian's chromium, headless, driven by selenium, against the real
``nirvis serve`` started as a subprocess on a free loopback port, with a gallery of RAP3DF people.

Skips (with the reason) only when chromium or chromedriver is not installed (``.ci/run`` installs them with
apt-get). Set ``NIRVIS_SCREENSHOT=docs/service.png`` to keep a screenshot of the page with every face blurred.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from .helpers import TOKEN, captures

pytestmark = [pytest.mark.data, pytest.mark.slow]

#: Blurs every image of the page (dataset faces are not ours to publish), for screenshots. Set through the
#: CSSOM: the page's Content-Security-Policy refuses an injected <style> element.
BLUR_JS = ("document.querySelectorAll('img').forEach(i => { i.style.filter = 'blur(16px)'; });"
           "return Array.from(document.querySelectorAll('img')).map(i => getComputedStyle(i).filter);")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(hallucination_gallery, tmp_path_factory):
    """``nirvis serve`` in a subprocess (the real command), on a free loopback port; yields its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "NIRVIS_TOKEN": TOKEN}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "nirvis.cli", "serve", "--gallery", str(hallucination_gallery),
                                 "--host", "127.0.0.1", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nirvis serve did not start (exit {proc.poll()}):\n{log.read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "write endpoints need 'Authorization: Bearer <token>'" in text, text
    assert "Traceback" not in text, text


def wait_for(driver, condition, timeout: float = 90.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)


def test_page_identifies_an_enrolled_person(chromium, server, rap3df_root, people):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    person = people[0]
    nir = captures(rap3df_root, person)[0]["ir"]
    chromium.get(server + "/")
    wait_for(chromium, lambda d: "10 people" in d.find_element(By.ID, "status").text)
    Select(chromium.find_element(By.ID, "channel")).select_by_value("red")  # RAP3DF keeps IR in the red channel
    chromium.find_element(By.ID, "probe").send_keys(str(nir))
    chromium.find_element(By.ID, "go").click()
    wait_for(chromium, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("done", "error"))
    assert chromium.find_element(By.ID, "error").is_displayed() is False, chromium.find_element(By.ID, "error").text

    shown = [e.text for e in chromium.find_elements(By.CSS_SELECTOR, "#matches .match .person")]
    assert len(shown) == 5
    assert person in shown, f"{person} not in the top 5 shown: {shown}"
    scores = [float(e.text.split()[-1]) for e in chromium.find_elements(By.CSS_SELECTOR, "#matches .match .score")]
    assert scores == sorted(scores, reverse=True)
    # the gallery's threshold (0.85, set for the test) is reached by the right person
    decision = chromium.find_element(By.ID, "decision")
    assert decision.text == f"Match: {person} (threshold 0.850)"
    assert decision.get_attribute("class") == "decision decision-yes"
    assert chromium.find_element(By.CSS_SELECTOR, "#matches .match.decided .person").text == person

    def loaded(css: str) -> list[int]:
        return chromium.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0])).map(i => i.complete ? i.naturalWidth : -1)",
            css)

    # the aligned probe, its hallucinated VIS face (this gallery has a model) and every gallery face are drawn
    wait_for(chromium, lambda d: all(w > 0 for w in loaded("#matches img")), timeout=30)
    assert loaded("#aligned") == [224] and loaded("#hallucinated") == [224]
    assert chromium.find_element(By.ID, "hallucinated").is_displayed()
    assert all(w == 224 for w in loaded("#matches img"))  # the kept aligned faces, served by person id

    # a screenshot with every face blurred
    filters = chromium.execute_script(BLUR_JS)
    assert filters and all(f == "blur(16px)" for f in filters), filters
    time.sleep(0.3)
    png = chromium.get_screenshot_as_png()
    assert png.startswith(b"\x89PNG")
    target = os.environ.get("NIRVIS_SCREENSHOT")
    if target:  # cut below the page's end
        import io

        from PIL import Image

        height = chromium.execute_script("return Math.ceil((document.querySelector('footer')"
                                        ".getBoundingClientRect().bottom + 8) * window.devicePixelRatio)")
        im = Image.open(io.BytesIO(png))
        im.crop((0, 0, im.width, min(im.height, height))).save(target, optimize=True)


def test_page_shows_the_services_refusal(chromium, server, tmp_path):
    from selenium.webdriver.common.by import By

    fake = tmp_path / "face.png"
    fake.write_text("not an image at all")
    chromium.get(server + "/")
    chromium.find_element(By.ID, "probe").send_keys(str(fake))
    chromium.find_element(By.ID, "go").click()
    wait_for(chromium, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "error")
    msg = chromium.find_element(By.ID, "error").text
    assert msg.startswith("face.png: not an image the service reads (by content")
    assert not chromium.find_element(By.ID, "result").is_displayed()
