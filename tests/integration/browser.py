"""A real headless Chromium for the pages' tests (Debian's chromium and chromium-driver, which
scripts/test.sh installs with apt-get when it runs as root), with no network."""
import shutil

import pytest


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def headless_chromium(loopback):
    """A selenium driver of headless Chromium, whose every request that is not file:, data: (or,
    with ``loopback``, to 127.0.0.1: a server under test) goes to a closed port; skips the test
    where there is none. The caller quits it."""
    chromium, driver_path = _chromium(), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("no chromium and chromedriver on PATH (scripts/test.sh installs Debian's "
                    "chromium and chromium-driver with apt-get when it runs as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # Chromium never sends loopback through a proxy, unless told to (<-loopback>)
    closed = ["--proxy-server=127.0.0.1:9"]
    if not loopback:
        closed += ["--proxy-bypass-list=<-loopback>", "--host-resolver-rules=MAP * ~NOTFOUND"]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", *closed):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
