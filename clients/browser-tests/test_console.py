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


class PresentAgent:
    """An agent that publishes `count` chat messages (and optionally opens a token stream), then stays joined
    (so it is in the session's presence) until `release` is set."""

    def __init__(self, gw: GatewayProcess, cafile: str, session: str, count: int, stream_text: Optional[List[str]] = None) -> None:
        self.gw = gw
        self.ctx = ssl.create_default_context(cafile=cafile)
        self.session = session
        self.count = count
        self.stream_text = stream_text
        self.ready = threading.Event()
        self.release = threading.Event()
        self.more = threading.Event()
        self.finished = threading.Event()
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._thread, daemon=True)

    def _thread(self) -> None:
        try:
            asyncio.run(asyncio.wait_for(self._main(), 90))
        except BaseException as e:  # noqa: BLE001
            self.error = e
        finally:
            self.finished.set()
            self.ready.set()

    async def _main(self) -> None:
        async with GatewayClient(self.gw.url, self.gw.token("helper-bot", "agent", ["*"]), ssl=self.ctx) as gw:
            for i in range(1, self.count + 1):
                await gw.send_message(self.session, f"message {i}")
            sub = await gw.join(self.session)
            if self.stream_text:
                async with gw.stream(self.session, stream="live-1", interval=0) as s:
                    for t in self.stream_text:
                        await s.append(t)
                    self.ready.set()
                    while not self.more.is_set():
                        await asyncio.sleep(0.05)
                    await s.append(" and more")
                    while not self.release.is_set():
                        await asyncio.sleep(0.05)
            else:
                self.ready.set()
                while not self.release.is_set():
                    await asyncio.sleep(0.05)
            sub.close()


def _open_console(browser: Any, gw: GatewayProcess, session: str, query: str = "") -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"https://127.0.0.1:{gw.port}/console/?session={session}{query}")
    browser.find_element(By.ID, "token").send_keys(gw.token("alice", "user", [session]))
    browser.find_element(By.ID, "connect").click()
    _wait(browser, "return document.getElementById('status').dataset.state === 'open'", what="status open")


def test_console_presence_and_load_older(tls_gateway: GatewayProcess, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    session = "proj-paging"
    assert tls_gateway.tls_dir
    agent = PresentAgent(tls_gateway, os.path.join(tls_gateway.tls_dir, "cert.pem"), session, 25)
    agent.thread.start()
    try:
        assert agent.ready.wait(20) and agent.error is None, repr(agent.error)
        _open_console(browser, tls_gateway, session, "&page=10")
        # The last page only, then the people in the session (the agent and this page).
        _wait(browser, "return document.querySelectorAll('.msg').length === 10", what="last page")
        texts = _texts(browser, ".msg .bubble")
        assert texts == [f"message {i}" for i in range(16, 26)], texts
        _wait(browser, "return [...document.querySelectorAll('#presence li')].map(l => l.dataset.sub).join(',') === 'alice,helper-bot'",
              what="presence list")
        assert browser.find_element(By.ID, "load-older").is_displayed()

        browser.find_element(By.ID, "load-older").click()
        _wait(browser, "return document.querySelectorAll('.msg').length === 20", what="second page")
        assert _texts(browser, ".msg .bubble") == [f"message {i}" for i in range(6, 26)]
        browser.find_element(By.ID, "load-older").click()
        _wait(browser, "return document.querySelectorAll('.msg').length === 25", what="third page")
        assert _texts(browser, ".msg .bubble") == [f"message {i}" for i in range(1, 26)]
        _wait(browser, "return document.getElementById('load-older').hidden", what="no more pages")
        assert browser.find_element(By.CSS_SELECTOR, ".notice.start").text == "Start of the session."
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "console-presence.png"))

        # The agent leaves: the list follows.
        agent.release.set()
        assert agent.finished.wait(15) and agent.error is None, repr(agent.error)
        _wait(browser, "return [...document.querySelectorAll('#presence li')].map(l => l.dataset.sub).join(',') === 'alice'",
              what="agent left")
        errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
        assert not errors, errors
    finally:
        agent.release.set()
        agent.thread.join(20)


def test_console_shows_an_answer_streaming_when_the_page_loads(tls_gateway: GatewayProcess, browser: Any) -> None:
    session = "proj-snapshot"
    assert tls_gateway.tls_dir
    agent = PresentAgent(tls_gateway, os.path.join(tls_gateway.tls_dir, "cert.pem"), session, 1, ["Half ", "an ", "answer"])
    agent.thread.start()
    try:
        assert agent.ready.wait(20) and agent.error is None, repr(agent.error)
        time.sleep(0.3)
        _open_console(browser, tls_gateway, session)
        _wait(browser, "return document.querySelector('.msg.agent.streaming .bubble')?.textContent === 'Half an answer'",
              what="snapshot shown")
        agent.more.set()
        _wait(browser, "return document.querySelector('.msg.agent.streaming .bubble')?.textContent === 'Half an answer and more'",
              what="delta appended")
        agent.release.set()
        assert agent.finished.wait(15) and agent.error is None, repr(agent.error)
        _wait(browser, "return !document.querySelector('.msg.streaming')", what="final message")
        assert _texts(browser, ".msg.agent .bubble") == ["message 1", "Half an answer and more"]
    finally:
        agent.more.set()
        agent.release.set()
        agent.thread.join(20)
