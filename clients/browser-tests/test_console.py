"""A real headless Chromium loads the session page from the gateway over wss (test certificate), sends a chat
message, and sees an agent's deltas, progress and reply rendered. Screenshots go to test-artifacts/."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python" / "tests"))
sys.path.insert(0, str(HERE.parent / "python" / "src"))

from gatewayproc import REPO_ROOT, GatewayProcess, make_cert  # noqa: E402
from samokoder_gateway import GatewayClient  # noqa: E402

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", REPO_ROOT / "test-artifacts"))
SESSION = "proj-console"


def _find(*names: str) -> Optional[str]:
    for n in names:
        p = shutil.which(n) or (n if os.access(n, os.X_OK) else None)
        if p:
            return p
    return None


CHROMIUM = os.environ.get("CHROMIUM_BIN") or _find("chromium", "/usr/bin/chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN") or _find("chromedriver", "/usr/bin/chromedriver")


@pytest.fixture
def tls_gateway() -> Iterator[GatewayProcess]:
    cert_dir = tempfile.mkdtemp(prefix="gw-cert-")
    make_cert(cert_dir)
    gw = GatewayProcess(tls_dir=cert_dir).start()
    try:
        yield gw
    finally:
        gw.dispose()
        shutil.rmtree(cert_dir, ignore_errors=True)


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip(
            f"Chromium is not installed (chromium: {CHROMIUM}, chromedriver: {CHROMEDRIVER}); "
            "apt-get install chromium chromium-driver"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--ignore-certificate-errors",
        "--window-size=1280,860", "--no-first-run", "--disable-extensions", "--lang=en-US",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(10)
    try:
        yield driver
    finally:
        driver.quit()


class ScriptedAgent:
    """An agent (the Python client, over wss with real certificate checks) that answers the first user message
    with deltas and progress, then waits for `release` before sending the final message."""

    def __init__(self, gw: GatewayProcess, cafile: str) -> None:
        self.gw = gw
        self.ctx = ssl.create_default_context(cafile=cafile)
        self.heard: Optional[str] = None
        self.streamed = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._thread, daemon=True)

    def _thread(self) -> None:
        try:
            asyncio.run(asyncio.wait_for(self._main(), 60))
        except BaseException as e:  # noqa: BLE001 - reported to the test
            self.error = e
        finally:
            self.finished.set()
            self.streamed.set()

    async def _main(self) -> None:
        token = self.gw.token("agent-007", "agent", ["*"])
        async with GatewayClient(self.gw.url, token, ssl=self.ctx) as gw:
            sub = await gw.join(SESSION, kinds={"chat.message"})
            self.joined_at = time.monotonic()
            async for msg in sub:
                if msg.sender.role == "user":
                    break
            self.heard = msg.text
            stream = f"reply-{msg.seq}"
            await gw.progress(SESSION, 1, 3, "Reading the request")
            await gw.progress(SESSION, 2, 3, "Writing the answer")
            for chunk in ["Sure — ", "here is ", "the plan ", "for “", msg.text or "", "”: "]:
                await gw.stream_delta(SESSION, chunk, stream=stream)
                await asyncio.sleep(0.05)
            self.streamed.set()
            while not self.release.is_set():
                await asyncio.sleep(0.05)
            final = f"Sure — here is the plan for “{msg.text}”: 1) scaffold the page, 2) wire the API, 3) ship it."
            await gw.send_message(SESSION, final, stream=stream, reply_to=msg.seq)
            await gw.progress(SESSION, 3, 3, "Done", status="done")


def _wait(driver: Any, js: str, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(js)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {js}")
        time.sleep(0.05)


def _texts(driver: Any, selector: str) -> List[str]:
    return list(driver.execute_script(f"return [...document.querySelectorAll({selector!r})].map(e => e.textContent)"))


def test_console_renders_a_live_session(tls_gateway: GatewayProcess, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    assert tls_gateway.tls_dir
    agent = ScriptedAgent(tls_gateway, os.path.join(tls_gateway.tls_dir, "cert.pem"))
    agent.thread.start()
    try:
        # Without the trailing slash too (the page's assets use absolute paths), with a refused token first.
        browser.get(f"https://127.0.0.1:{tls_gateway.port}/console")
        assert "session console" in browser.title.lower()
        assert browser.find_element(By.ID, "url").get_attribute("value") == f"wss://127.0.0.1:{tls_gateway.port}/v1/ws"
        browser.find_element(By.ID, "session").send_keys(SESSION)
        browser.find_element(By.ID, "token").send_keys("not.a.jwt")
        browser.find_element(By.ID, "connect").click()
        _wait(browser, "return document.getElementById('status').dataset.state === 'closed'", what="refused token")
        _wait(browser, "return document.querySelector('.notice.bad')?.textContent.includes('refused')", what="refusal notice")

        browser.get(f"https://127.0.0.1:{tls_gateway.port}/console/")
        assert browser.execute_script("return getComputedStyle(document.body).display") == "flex", "stylesheet loaded"

        browser.find_element(By.ID, "session").send_keys(SESSION)
        browser.find_element(By.ID, "token").send_keys(tls_gateway.token("alice", "user", [SESSION]))
        browser.find_element(By.ID, "connect").click()
        _wait(browser, "return document.getElementById('status').dataset.state === 'open'", what="status open")
        assert "live" in browser.find_element(By.ID, "status-text").text

        deadline = time.monotonic() + 15
        while not hasattr(agent, "joined_at"):
            assert time.monotonic() < deadline and not agent.finished.is_set(), f"agent did not join: {agent.error!r}"
            time.sleep(0.05)

        box = browser.find_element(By.ID, "message")
        box.send_keys("a landing page for the bakery")
        box.send_keys(Keys.ENTER)
        # The user's own bubble, acked with its seq.
        _wait(browser, "return [...document.querySelectorAll('.msg.user .meta')].some(m => m.textContent.includes('#1'))",
              what="own message acked")
        assert _texts(browser, ".msg.user .bubble") == ["a landing page for the bakery"]

        assert agent.streamed.wait(15), "agent did not stream"
        assert agent.error is None, repr(agent.error)
        _wait(browser, "return document.querySelector('.msg.agent.streaming .bubble')?.textContent.includes('bakery')",
              what="streaming bubble")
        _wait(browser, "return document.getElementById('progress-caption').textContent.includes('Step 2 of 3')",
              what="progress step 2")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "console-streaming.png"))
        streaming_text = _texts(browser, ".msg.agent.streaming .bubble")[0]
        assert streaming_text == "Sure — here is the plan for “a landing page for the bakery”: "

        agent.release.set()
        assert agent.finished.wait(15)
        assert agent.error is None, repr(agent.error)
        _wait(browser, "return document.getElementById('progress-fill').style.width === '100%'", what="progress done")
        _wait(browser, "return !document.querySelector('.msg.streaming')", what="streaming bubble finalized")
        agent_bubbles = _texts(browser, ".msg.agent .bubble")
        assert len(agent_bubbles) == 1, agent_bubbles  # the final message replaced the streaming bubble
        assert agent_bubbles[0].startswith("Sure — here is the plan for “a landing page for the bakery”: 1) scaffold")
        steps: Dict[str, str] = dict(
            browser.execute_script("return [...document.querySelectorAll('#steps li')].map(l => [l.textContent, l.className])")
        )
        assert steps == {"Reading the request": "done", "Writing the answer": "done", "Done": "done"}
        assert "Step 3 of 3: Done" in browser.find_element(By.ID, "progress-caption").text
        assert agent.heard == "a landing page for the bakery"
        _wait(browser, "const f = document.getElementById('progress-fill'); return f.offsetWidth >= f.parentElement.clientWidth",
              what="progress bar animation")
        browser.save_screenshot(str(ARTIFACTS / "console.png"))

        # A reload shows the same transcript from history (join since 0), without duplicates.
        browser.refresh()
        browser.find_element(By.ID, "session").clear()
        browser.find_element(By.ID, "session").send_keys(SESSION)
        browser.find_element(By.ID, "token").send_keys(tls_gateway.token("alice", "user", [SESSION]))
        browser.find_element(By.ID, "connect").click()
        _wait(browser, "return document.querySelectorAll('.msg').length === 2", what="history replayed")
        assert _texts(browser, ".msg.user .bubble") == ["a landing page for the bakery"]
        assert len(_texts(browser, ".msg.agent .bubble")) == 1
        errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
        assert not errors, errors
    finally:
        agent.release.set()
        agent.thread.join(20)
