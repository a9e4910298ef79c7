"""The playground's files, read as files: nothing from another host, nothing inline, every code explained.

The browser test shows the page working under its Content-Security-Policy; these checks say why it keeps
working when someone edits it, and they fail on the edit itself, before any browser starts.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from html.parser import HTMLParser

from litellm_cloud.playground import ASSETS, PATH
from tests.support import REPO

FOLDER = REPO / "litellm_cloud" / "playground"
STATIC = sorted(p for p in FOLDER.iterdir() if p.is_file() and p.suffix != ".py")
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # an XML name, never fetched


def test_every_file_in_the_folder_is_served_and_shipped() -> None:
    assert {name for name, _ in ASSETS.values()} == {p.name for p in STATIC}
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = globs.get("litellm_cloud.playground", []) + globs.get("*", [])
    assert [p.name for p in STATIC if not any(fnmatch.fnmatch(p.name, g) for g in patterns)] == []


def test_no_file_names_another_host() -> None:
    urls = {
        p.name: re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s\"'<>)]*", p.read_text()) for p in STATIC
    }
    urls["favicon.svg"] = [u for u in urls["favicon.svg"] if u != SVG_NAMESPACE]
    assert {name: found for name, found in urls.items() if found} == {}
    css = (FOLDER / "app.css").read_text()
    assert "url(" not in css and "@import" not in css


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text += data


def test_the_page_has_no_inline_script_or_style_and_loads_only_its_own_assets() -> None:
    tags = _Tags()
    tags.feed((FOLDER / "index.html").read_text())
    assert tags.found, "the parser saw no tags"
    assert tags.script_text.strip() == ""
    assert [t for t, _ in tags.found if t == "style"] == []
    inline = [(t, name) for t, attrs in tags.found for name in attrs if name == "style" or name.startswith("on")]
    assert inline == []
    loaded = [attrs.get("src") or attrs.get("href") for t, attrs in tags.found if t in ("script", "link", "img")]
    assert loaded and all(isinstance(u, str) and u in ASSETS for u in loaded), loaded
    scripts = [attrs for t, attrs in tags.found if t == "script"]
    assert scripts == [{"src": f"{PATH}/app.js", "defer": None}]


def test_the_script_calls_only_this_gateway_and_writes_no_html() -> None:
    js = (FOLDER / "app.js").read_text()
    code = "\n".join(line for line in js.splitlines() if not line.lstrip().startswith("//"))
    for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                   "XMLHttpRequest", "WebSocket", "EventSource", "import(", "localStorage", "?key=", "window.open"):  # fmt: skip
        assert banned not in code, banned
    assert code.count("fetch(") == 1  # inside call(): same origin, no credentials, no redirects
    assert 'redirect: "error"' in code and 'credentials: "omit"' in code
    assert set(re.findall(r'call\("([^"]+)"', code)) == {"/v1/models", "/v1/usage", "/v1/chat/completions"}


def _explained_codes() -> set[str]:
    js = (FOLDER / "app.js").read_text()
    table = js.split("const EXPLANATIONS = {", 1)[1].split("\n  };", 1)[0]
    return set(re.findall(r"^\s+(\w+): \"", table, flags=re.MULTILINE))


def test_every_refusal_code_a_client_can_meet_is_explained() -> None:
    readme = (REPO / "README.md").read_text()
    errors = readme.split("## Errors", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in errors.splitlines() if re.match(r"\| \d{3} \|", line)]
    gateway_codes = {c for row in rows for c in re.findall(r"`([a-z_]+)`", row.split("|")[2])}
    nginx = (REPO / "nginx" / "snippets" / "json-errors.conf").read_text()
    nginx_codes = set(re.findall(r'"code":"([a-z_]+)"', nginx))
    assert len(gateway_codes) >= 14 and len(nginx_codes) >= 10
    assert (gateway_codes | nginx_codes) - _explained_codes() == set()
