"""The dashboard in a real browser: Debian's headless Chromium driven by chromedriver through
Selenium, against a running dispatcher. Called by dispatcher/tests/integration/dashboard.rs.

Usage: dashboard.py BASE_URL TOKEN [--screenshot PNG]

Signs in (a wrong token first), checks the functions list, watches a request count rise while
requests are sent, rolls `greeter` back to v1 from its page, and looks at the schedules page.
Prints one line per step; exits non-zero with the reason on the first failure.
"""

import json
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def browser(profile):
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
        "--user-data-dir=" + profile,
    ]:
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def step(text):
    print("ok:", text, flush=True)


def main():
    base, token = sys.argv[1], sys.argv[2]
    shot = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--screenshot" else None
    ui = base + "/_dispatcher/ui/"
    with tempfile.TemporaryDirectory() as profile:
        d = browser(profile)
        try:
            run(d, base, ui, token, shot)
        finally:
            d.quit()


def wait(d, cond, what, timeout=15):
    try:
        return WebDriverWait(d, timeout, poll_frequency=0.2).until(lambda _: cond())
    except Exception:
        raise SystemExit("timed out waiting for " + what + "; page text:\n" + d.find_element(By.TAG_NAME, "body").text)


def text_of(d, css):
    found = d.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def run(d, base, ui, token, shot):
    d.get(ui)
    login = wait(d, lambda: d.find_element(By.ID, "login").is_displayed() and d.find_element(By.ID, "login"), "the login form")
    assert "dispatcher" in d.title
    step("the login form is shown")

    d.find_element(By.ID, "token").send_keys("not-the-token")
    d.find_element(By.ID, "login-button").click()
    wait(d, lambda: "rejected" in text_of(d, "#login-error"), "the wrong token to be refused")
    step("a wrong token is refused")

    field = d.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    d.find_element(By.ID, "login-button").click()
    wait(d, lambda: len(d.find_elements(By.CSS_SELECTOR, "#functions tbody tr")) > 0, "the functions table")
    names = [r.get_attribute("data-function") for r in d.find_elements(By.CSS_SELECTOR, "#functions tbody tr")]
    for demo in ["echo", "list_orders", "create_order", "order_stats", "greeter"]:
        assert demo in names, "no %s in %s" % (demo, names)
    assert token not in d.current_url, "the token is in the URL"
    kept = d.execute_script("return sessionStorage.getItem('dispatcher-admin-token')")
    assert kept == token, "the token is not in the tab's session storage"
    assert d.execute_script("return localStorage.length") == 0, "something went to localStorage"
    step("signed in; %d functions listed: %s" % (len(names), ", ".join(sorted(names))))

    # A request count that rises without a reload.
    d.find_element(By.CSS_SELECTOR, 'a[href="#/function/echo"]').click()
    wait(d, lambda: text_of(d, "#function-name").startswith("echo"), "the echo page")
    d.execute_script("window.__sameDocument = true")
    wait(d, lambda: text_of(d, "#stat-total").isdigit(), "the request count")
    before = int(text_of(d, "#stat-total"))
    for i in range(7):
        req = urllib.request.Request(base + "/echo", data=("hello %d" % i).encode(), method="POST")
        with urllib.request.urlopen(req) as resp:
            assert resp.status == 200
    wait(d, lambda: text_of(d, "#stat-total").isdigit() and int(text_of(d, "#stat-total")) >= before + 7,
         "the request count to rise by 7 from %d" % before)
    assert d.execute_script("return window.__sameDocument === true"), "the page was reloaded"
    rows = d.find_elements(By.CSS_SELECTOR, "#invocations tbody tr")
    assert len(rows) >= 7, "only %d recent invocations shown" % len(rows)
    wait(d, lambda: text_of(d, "#stat-rate").endswith("/s"), "a request rate")
    step("echo's request count rose from %d to %s live; %d invocations listed" % (before, text_of(d, "#stat-total"), len(rows)))

    # Invoke from the page.
    d.find_element(By.ID, "invoke-body").send_keys("from the page")
    d.find_element(By.ID, "invoke-button").click()
    wait(d, lambda: "from the page" in text_of(d, "#invoke-output"), "the invoke output")
    assert "status 200" in text_of(d, "#invoke-output")
    step("invoked echo from the page")
    if shot:
        d.save_screenshot(shot)
        step("screenshot saved to " + shot)

    # Roll greeter back from its page.
    d.get(ui + "#/function/greeter")
    wait(d, lambda: len(d.find_elements(By.ID, "rollback-1")) == 1, "greeter's rollback button for v1")
    current = text_of(d, "#versions .current")
    assert current == "current", "no current version marked"
    d.find_element(By.ID, "rollback-1").click()
    wait(d, lambda: "greeter is at v1 again" in text_of(d, "#message"), "the rollback to be confirmed")
    wait(d, lambda: len(d.find_elements(By.ID, "rollback-2")) == 1, "v2 to become a rollback target")
    step("rolled greeter back to v1 from the page")

    d.find_element(By.ID, "nav-schedules").click()
    wait(d, lambda: len(d.find_elements(By.CSS_SELECTOR, '[data-schedule="order_stats/every-minute"] .next')) == 1, "the schedules page")
    nxt = text_of(d, '[data-schedule="order_stats/every-minute"] .next')
    assert nxt.count(",") == 4, "expected 5 next fire times, got " + nxt
    step("schedules page shows order_stats/every-minute, next: " + nxt.split(",")[0])

    d.find_element(By.ID, "logout").click()
    wait(d, lambda: d.find_element(By.ID, "login").is_displayed(), "the login form after signing out")
    assert d.execute_script("return sessionStorage.getItem('dispatcher-admin-token')") is None
    step("signed out: the token is gone from the tab")


if __name__ == "__main__":
    main()
