"""The playground as a test sees it: load it, use a key, send a message, read what it shows."""

from __future__ import annotations

from typing import Any

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

WAIT = 45.0  # seconds; two shared cores, a proxy, a simulator and a browser


class Playground:
    """One loaded ``/playground`` page in ``driver``."""

    def __init__(self, driver: webdriver.Chrome, base: str) -> None:
        self.driver = driver
        self.base = base

    def open(self) -> Playground:
        self.driver.get(f"{self.base}/playground")
        self.wait(lambda: self.js("return document.body.dataset.ready") == "true", "the page's script to start")
        return self

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait(self, condition: Any, what: str, timeout: float = WAIT) -> Any:
        return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(lambda _: condition(), message=what)

    def el(self, element_id: str) -> Any:
        return self.driver.find_element(By.ID, element_id)

    def state(self, element_id: str) -> str:
        return str(self.el(element_id).get_attribute("data-state"))

    def use_key(self, key: str, *, remember: bool = False) -> None:
        field = self.el("api-key")
        field.clear()
        field.send_keys(key)
        if self.el("remember-key").is_selected() != remember:
            self.el("remember-key").click()
        self.el("use-key").click()
        self.wait(lambda: self.state("key-status") in ("ok", "refused"), "the key check")

    def models(self) -> list[str]:
        return [str(o.get_attribute("value")) for o in Select(self.el("model")).options]

    def remaining(self, meter: str = "requests") -> str | None:
        return self.el(f"meter-{meter}").get_attribute("data-remaining")

    def wait_remaining(self, value: int, meter: str = "requests") -> None:
        self.wait(lambda: self.remaining(meter) == str(value), f"{meter} remaining to show {value}")

    def set_field(self, element_id: str, value: str) -> None:
        field = self.el(element_id)
        field.clear()
        field.send_keys(value)

    def send(self, text: str) -> None:
        self.set_field("message", text)
        self.el("send").click()

    def reply_progress(self) -> tuple[str, int]:
        """(reply state, length of the newest assistant message), read in one round trip."""
        state, length = self.js(
            "const m = document.querySelectorAll('#transcript .assistant .content');"
            "return [document.getElementById('reply-status').dataset.state,"
            " m.length ? m[m.length - 1].textContent.length : -1];"
        )
        return str(state), int(length)

    def last_reply(self) -> str:
        return str(self.js("const m = document.querySelectorAll('#transcript .assistant .content');"
                           "return m.length ? m[m.length - 1].textContent : '';"))  # fmt: skip

    def wait_reply_done(self) -> str:
        self.wait(lambda: self.state("reply-status") in ("done", "error", "stopped"), "the reply to finish")
        return self.state("reply-status")

    def text(self, element_id: str) -> str:
        return str(self.js("return document.getElementById(arguments[0]).textContent", element_id))

    def console_problems(self) -> list[str]:
        """Console entries that mean the page broke: CSP refusals, Trusted Types, uncaught errors."""
        words = ("Content Security Policy", "Trusted Type", "Uncaught", "TypeError", "ReferenceError")
        return [e["message"] for e in self.driver.get_log("browser") if any(w in e["message"] for w in words)]
