"""The chat example in real headless Chromium pages, driven by Selenium.

The server runs as a subprocess (``examples/chat_server.py --port 0``), exactly as a person
would start it. Chromium and chromedriver come from Debian (``scripts/install_browser.sh``);
when they are missing these tests fail and say so, because CI installs them first.

The first test saves a screenshot to ``docs/images/chat.png`` when that file is missing or
when ``TRIO_WS_UPDATE_SCREENSHOTS=1`` is set (always to the test's tmp dir as well), so that
an ordinary run does not leave the working tree dirty.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CHAT_SERVER = ROOT / "examples" / "chat_server.py"
SCREENSHOT = ROOT / "docs" / "images" / "chat.png"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
STARTUP_TIMEOUT = 20.0  # seconds for the server to print its address
WAIT = 15.0  # seconds any single page condition may take
RECONNECT_WAIT = 30.0  # the page backs off up to 10 s between attempts

# One round trip instead of one per element: [[className, "Author: text"], ...] of the log,
# without the time stamps. With the argument "opener" it reads the page that opened this one.
READ_LOG_JS = """
const doc = arguments[0] === 'opener' ? window.opener.document : document;
return Array.from(doc.querySelectorAll('#messages li'), (li) => [
  li.className,
  Array.from(li.childNodes)
    .filter((node) => !(node.classList && node.classList.contains('time')))
    .map((node) => node.textContent)
    .join(': '),
]);
"""


class ChatServer:
    """``examples/chat_server.py`` in a subprocess; stderr (its log) goes to a file."""

    def __init__(self, log_path: Path, *options: str) -> None:
        self.log_path = log_path
        self.options = options  # command-line options beyond --host and --port
        self.process: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self, port: int = 0) -> None:
        assert self.process is None, "already running"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(ROOT)) if p)
        with self.log_path.open("a") as log:
            command = [sys.executable, "-u", str(CHAT_SERVER), "--host", "127.0.0.1"]
            self.process = subprocess.Popen(
                [*command, "--port", str(port), *self.options],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        line = self._read_line(STARTUP_TIMEOUT)
        match = re.search(r"Running on http://127\.0\.0\.1:(\d+)", line)
        if match is None:
            self.stop()
            pytest.fail(f"chat server did not start: {line!r}\n{self.log()}")
        self.port = int(match[1])
        assert port in (0, self.port)

    def _read_line(self, timeout: float) -> str:
        assert self.process is not None and self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                return f"<nothing on stdout after {timeout} s>"
        return self.process.stdout.readline()

    def stop(self) -> None:
        """SIGTERM (the server shuts down gracefully), then SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
                pytest.fail(f"chat server ignored SIGTERM for 10 s\n{self.log()}")
        assert process.stdout is not None
        process.stdout.close()

    def log(self) -> str:
        return "--- chat server log ---\n" + self.log_path.read_text(errors="replace")


@pytest.fixture
def chat_server(tmp_path: Path) -> Iterator[ChatServer]:
    server = ChatServer(tmp_path / "chat_server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def open_page(tmp_path: Path) -> Iterator[Callable[[str], Any]]:
    """``open_page(url)`` opens ``url`` in a fresh headless Chromium; all quit at teardown."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: run scripts/install_browser.sh "
            "(apt-get installs Debian's chromium and chromium-driver) before the browser tests"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    drivers: list[Any] = []

    def open_(url: str) -> Any:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1000,640",
            f"--user-data-dir={tmp_path / f'chromium-profile-{len(drivers)}'}",
        ):
            options.add_argument(flag)
        # An explicit driver path: Selenium Manager never runs (and never downloads).
        service = Service(executable_path=str(CHROMEDRIVER))
        driver = webdriver.Chrome(options=options, service=service)
        drivers.append(driver)
        driver.set_page_load_timeout(WAIT)
        driver.get(url)
        return driver

    try:
        yield open_
    finally:
        for driver in drivers:
            driver.quit()


def wait_for(driver: Any, what: str, condition: Callable[[Any], Any], timeout: float = WAIT) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)
    except TimeoutException:
        pytest.fail(f"timed out after {timeout} s waiting for {what}\npage log: {log(driver)}")


def log(driver: Any, page: str = "") -> list[tuple[str, str]]:
    """The message log of the driver's page, or with ``page="opener"`` of the page it opened."""
    return [(kind, text) for kind, text in driver.execute_script(READ_LOG_JS, page)]


def status(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, "status").get_attribute("data-state"))


def attr(element: Any, name: str) -> str:
    """The element's ``data-<name>`` attribute."""
    return str(element.get_attribute(f"data-{name}"))


def wait_for_line(driver: Any, kind: str, text: str, count: int = 1, timeout: float = WAIT) -> None:
    """Wait until ``count`` lines of CSS class ``kind`` contain ``text``."""

    def seen(d: Any) -> bool:
        return sum(1 for k, t in log(d) if kind in k.split() and text in t) >= count

    wait_for(driver, f"{count} x {kind} line with {text!r}", seen, timeout)


def join(driver: Any, name: str) -> None:
    from selenium.webdriver.common.by import By

    wait_for(driver, "the connection to open", lambda d: status(d) == "open")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "join").click()
    wait_for_line(driver, "notice", f"Welcome {name}!")
    wait_for(driver, "the message box", lambda d: d.find_element(By.ID, "message").is_displayed())


def say(driver: Any, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    wait_for(driver, "the Send button", lambda d: d.find_element(By.ID, "send").is_enabled())
    driver.find_element(By.ID, "message").send_keys(text, Keys.ENTER)


def users(driver: Any) -> list[str]:
    return list(
        driver.execute_script(
            "return Array.from(document.querySelectorAll('#users li'), (li) => li.textContent);"
        )
    )


def test_two_pages_chat_join_message_leave(
    chat_server: ChatServer, open_page: Callable[[str], Any], tmp_path: Path
) -> None:
    alice = open_page(chat_server.url)
    bob = open_page(chat_server.url)

    join(alice, "Alice")
    join(bob, "Bob")
    wait_for_line(alice, "notice", "Bob joined the chat")
    wait_for(alice, "Alice's user list", lambda d: users(d) == ["Alice", "Bob"])
    assert users(bob) == ["Alice", "Bob"]
    # Bob joined after Alice: he sees his welcome, and no join notice of his own.
    assert not [t for _, t in log(bob) if "joined the chat" in t]

    say(alice, "Hello Bob! Is the server on trio now?")
    wait_for_line(bob, "message", "Alice: Hello Bob! Is the server on trio now?")
    say(bob, "It is, Alice: one nursery per connection.")
    wait_for_line(alice, "message", "Bob: It is, Alice: one nursery per connection.")
    say(alice, "And if one of us goes, the room keeps talking.")
    wait_for_line(bob, "message", "And if one of us goes")

    # Both saw the same conversation in the same order, and each page marks its own lines.
    conversation = [
        "Alice: Hello Bob! Is the server on trio now?",
        "Bob: It is, Alice: one nursery per connection.",
        "Alice: And if one of us goes, the room keeps talking.",
    ]
    wait_for_line(alice, "message", conversation[2])
    for page, me in ((alice, "Alice"), (bob, "Bob")):
        lines = [(k.split(), t) for k, t in log(page) if "message" in k.split()]
        assert [t for _, t in lines] == conversation
        assert [("mine" in k) for k, _ in lines] == [t.startswith(me) for _, t in lines]

    alice.save_screenshot(str(tmp_path / "chat.png"))
    if not SCREENSHOT.exists() or os.environ.get("TRIO_WS_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "chat.png", SCREENSHOT)

    started = time.monotonic()
    bob.quit()  # closes his page: the browser ends the WebSocket
    wait_for_line(alice, "notice", "Bob left the chat")
    wait_for(alice, "the user list to shrink", lambda d: users(d) == ["Alice"])
    assert time.monotonic() - started < WAIT
    assert status(alice) == "open"


def test_page_reconnects_after_server_restart(
    chat_server: ChatServer, open_page: Callable[[str], Any]
) -> None:
    from selenium.webdriver.common.by import By

    page = open_page(chat_server.url)
    join(page, "Carol")
    say(page, "before the restart")
    wait_for_line(page, "message", "before the restart")

    port = chat_server.port
    chat_server.stop()
    wait_for(page, "the page to notice the server went away", lambda d: status(d) == "closed")
    wait_for_line(page, "error", "Connection lost (code 1001)")  # run_app said GOING_AWAY
    assert not page.find_element(By.ID, "send").is_enabled()
    # While the server is down the page keeps trying, waiting longer each time: the first
    # wait is 0.5 s +-25%, the second 1 s +-25%.
    badge = page.find_element(By.ID, "status")
    wait_for(page, "a second failed attempt", lambda d: int(attr(badge, "failures")) >= 2)
    assert int(attr(badge, "retry-ms")) >= 750

    chat_server.start(port=port)  # same port, so the page's retries find it
    wait_for_line(page, "notice", "Welcome Carol!", count=2, timeout=RECONNECT_WAIT)
    assert status(page) == "open"
    assert attr(badge, "failures") == "0"
    assert users(page) == ["Carol"]
    say(page, "after the restart")
    wait_for_line(page, "message", "after the restart")


HEARTBEAT = 1.0  # seconds: the server pings a page after this much silence
# Idle time, the point of the test rather than a wait for something: long enough for the
# server to ping every page three times and for each page to answer, so that the messages
# after it follow a pong. No page exposes the pings to scripts, so there is nothing to count.
IDLE = 3.5 * HEARTBEAT
BURST = 200  # messages one page sends at once

# Where the page keeps its own state (top-level `let`s of chat.html's script): the WebSocket
# it opened first, every visibility change with the number of log lines at that moment.
WATCH_JS = """
window.firstSocket = ws;
window.visibility = [];
document.addEventListener('visibilitychange', () => visibility.push(
  [document.visibilityState, document.querySelectorAll('#messages li').length]));
return [ws.extensions, document.visibilityState];
"""
# Submits every text through the page's own message form, without waiting in between.
SEND_ALL_JS = """
const input = document.getElementById('message');
const form = document.getElementById('message-form');
for (const text of arguments[0]) {
  input.value = text;
  form.requestSubmit();
}
"""
# What the page says about its connection: still the first WebSocket, and open?
CONNECTION_JS = """
return {
  same: ws === window.firstSocket,
  open: ws !== null && ws.readyState === WebSocket.OPEN,
  failures: document.getElementById('status').dataset.failures,
};
"""


def wait_for_messages(driver: Any, expected: list[str], server: ChatServer, page: str = "") -> None:
    """Wait until the log's chat lines are ``expected``.

    Fails at once when the page shows an error (such as "Connection lost") or that somebody
    left, which here means a connection dropped.
    """

    def arrived(d: Any) -> bool:
        lines = log(d, page)
        trouble = [t for k, t in lines if "error" in k.split() or "left the chat" in t]
        if trouble:
            pytest.fail(f"the page shows {trouble}\n{server.log()}")
        return [text for kind, text in lines if "message" in kind.split()] == expected

    wait_for(driver, f"{len(expected)} chat lines ending {expected[-1:]}", arrived)


def test_idle_hidden_and_busy_pages_keep_their_connection(
    open_page: Callable[[str], Any], tmp_path: Path
) -> None:
    """The demo as people use it: two tabs, idle for a while, one hidden, one chatty.

    Chromium negotiates permessage-deflate, the server pings idle pages, the pages answer with
    pongs, and the next compressed message must still be inflated. Every message reaches both
    pages, and neither page ever loses its connection.
    """
    server = ChatServer(tmp_path / "chat_server.log", "--heartbeat", str(HEARTBEAT))
    server.start()
    try:
        alice = open_page(server.url)
        bob = open_page(server.url)
        join(alice, "Alice")
        join(bob, "Bob")
        for page in (alice, bob):
            assert page.execute_script(WATCH_JS) == ["permessage-deflate", "visible"]
        chat: list[str] = []

        time.sleep(IDLE)  # both pages idle across several heartbeats
        say(alice, "Still there after a few pings?")
        chat.append("Alice: Still there after a few pings?")
        wait_for_messages(bob, chat, server)
        say(bob, "Still here.")
        chat.append("Bob: Still here.")
        wait_for_messages(alice, chat, server)

        # Alice opens another tab in front of the chat, which is hidden from then on. That
        # blank tab can read the chat tab (its opener) without bringing it to the front.
        alice_chat = alice.current_window_handle
        alice.execute_script("window.open('about:blank', '_blank');")
        wait_for(alice, "the second tab", lambda d: len(d.window_handles) == 2)
        alice.switch_to.window(next(h for h in alice.window_handles if h != alice_chat))
        hidden = "return window.opener.document.visibilityState;"
        wait_for(alice, "the chat tab to be hidden", lambda d: d.execute_script(hidden) == "hidden")

        time.sleep(IDLE)  # idle again, Alice's page hidden all along
        burst = [f"burst {n:03d} of {BURST}" for n in range(BURST)]
        bob.execute_script(SEND_ALL_JS, burst)
        chat += [f"Bob: {text}" for text in burst]
        wait_for_messages(bob, chat, server)
        wait_for_messages(alice, chat, server, page="opener")
        assert alice.execute_script(hidden) == "hidden"

        alice.close()  # the blank tab: the chat tab is in front again
        alice.switch_to.window(alice_chat)
        wait_for(
            alice,
            "the chat tab to be visible",
            lambda d: d.execute_script("return document.visibilityState;") == "visible",
        )
        say(alice, "Back, did I miss anything?")
        chat.append("Alice: Back, did I miss anything?")
        wait_for_messages(bob, chat, server)
        wait_for_messages(alice, chat, server)

        # The chat tab was hidden before the burst and visible again after all of it arrived.
        visibility = alice.execute_script("return window.visibility;")
        assert [state for state, _ in visibility] == ["hidden", "visible"], visibility
        assert visibility[1][1] - visibility[0][1] >= BURST, visibility
        for page, name in ((alice, "Alice"), (bob, "Bob")):
            assert page.execute_script(CONNECTION_JS) == {
                "same": True,
                "open": True,
                "failures": "0",
            }, f"{name}'s page reconnected"
            assert [t for _, t in log(page) if "Welcome" in t] == [f"Welcome {name}!"]
            assert not [t for k, t in log(page) if "error" in k.split()]
            assert status(page) == "open"
        assert users(alice) == users(bob) == ["Alice", "Bob"]
        # The server saw two joins, no leave, and nothing went wrong (before it stops, which
        # makes everybody leave).
        server_log = server.log()
        assert server_log.count("joined the chat") == 2, server_log
        for trouble in ("left the chat", "ERROR", "WARNING", "Traceback"):
            assert trouble not in server_log, server_log
    finally:
        server.stop()
