"""The web page at ``/``: served with a strict CSP; driven end to end in headless Chromium.

The browser test needs Debian's ``chromium`` and ``chromedriver`` and the ``selenium`` package;
it is skipped cleanly without them. The server runs in this process (uvicorn in a thread) with
one real worker process running ``verify``.
"""

from __future__ import annotations

import shutil
import threading
import time

import pytest
from live import free_port
from server_util import SPEC_SAT, SPEC_UNSAT, client_for, settings_for, tiny_model_bytes

from server.app import create_app

CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage")


def test_page_is_served_with_csp(tmp_path):
    with client_for(settings_for(tmp_path, workers=0)) as client:
        r = client.get("/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert 'id="submit-form"' in r.text and "/v1/verifications" in r.text
        assert "/" not in client.get("/openapi.json").json()["paths"]


@pytest.fixture
def live_url(tmp_path):
    """The app under uvicorn on a free loopback port, in a thread of this process."""
    uvicorn = pytest.importorskip("uvicorn")
    port = free_port()
    app = create_app(settings_for(tmp_path / "data", workers=1))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < end, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("Debian's chromium and chromedriver are not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path=driver_path))
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def wait_for(predicate, timeout: float = 90.0, what: str = "the page"):
    end = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:  # noqa: BLE001 - elements come and go while the page re-renders
            value = None
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def rows(driver) -> list[list[str]]:
    return [[td.text for td in tr.find_elements("tag name", "td")]
            for tr in driver.find_elements("css selector", "#jobs tbody tr")]


def test_browser_submit_watch_and_counterexample(browser, live_url, tmp_path):
    model, spec = tmp_path / "tiny.onnx", tmp_path / "sat.vnnlib"
    model.write_bytes(tiny_model_bytes())
    spec.write_text(SPEC_SAT)
    by = "id"
    browser.get(live_url + "/")
    assert browser.title.startswith("nncert")

    browser.find_element(by, "submit").click()  # nothing chosen: the page says what is missing
    assert wait_for(lambda: browser.find_element(by, "error").text) == "choose a model file"

    browser.find_element(by, "model").send_keys(str(model))
    browser.find_element(by, "spec").send_keys(str(spec))
    browser.find_element(by, "timeout").send_keys("60")
    browser.find_element(by, "submit").click()
    wait_for(lambda: rows(browser), what="the job to be listed")
    done = wait_for(lambda: [r for r in rows(browser) if r[1] == "done"], what="a verdict")
    assert done[0][2] == "sat"
    table = wait_for(lambda: browser.find_element(by, "counterexample"), what="counterexample")
    cells = {tr.find_elements("tag name", "td")[0].text: tr.find_elements("tag name", "td")[1].text
             for tr in table.find_elements("tag name", "tr")[1:]}
    assert set(cells) == {"X_0", "X_1", "Y_0"} and float(cells["Y_0"]) >= 1.5

    # The same model with a property typed into the page: listed beside the first, unsat.
    browser.execute_script("arguments[0].value = ''", browser.find_element(by, "spec"))
    browser.find_element(by, "spec-text").send_keys(SPEC_UNSAT)
    browser.find_element(by, "submit").click()
    verdicts = wait_for(lambda: sorted(r[2] for r in rows(browser) if r[1] == "done")
                        if len(rows(browser)) == 2 and all(r[1] == "done" for r in rows(browser))
                        else None, what="both verdicts")
    assert verdicts == ["sat", "unsat"]
    assert browser.find_element(by, "error").text == ""
    assert not browser.find_elements("id", "counterexample")  # the unsat job is selected now
