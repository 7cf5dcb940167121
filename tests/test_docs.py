"""The docs site cannot rot: keys against pyproject.toml, every public name documented, every
Python block run or marked, a strict build, and the built site opened in a real browser."""

from __future__ import annotations

import functools
import http.server
import importlib.util
import inspect
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flwr_privacy

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
_spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
assert _spec and _spec.loader
hooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hooks)


def _flat(prefix: str, table: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _flat(f"{prefix}{key}.", value)
        else:
            yield f"{prefix}{key}", value


PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DEFAULTS = dict(_flat("", PYPROJECT["tool"]["flwr"]["app"]["config"]))


def _as_doc(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def _same(documented: str, value: Any) -> bool:
    if isinstance(value, float | int) and not isinstance(value, bool):
        try:
            return float(documented) == value
        except ValueError:
            return False
    return documented == _as_doc(value)


def test_every_run_config_key_is_in_one_guide_table_with_its_default() -> None:
    seen: dict[str, list[str]] = {}
    wrong = []
    for page, keys, row in hooks.key_rows():
        default = row.split("|")[2].strip().strip("`")
        for key in keys:
            seen.setdefault(key, []).append(page)
            if key in DEFAULTS and len(keys) == 1 and not _same(default, DEFAULTS[key]):
                wrong.append(f"{key} ({page}): docs say {default}, pyproject {DEFAULTS[key]!r}")
    assert len(DEFAULTS) > 80
    missing = sorted(set(DEFAULTS) - set(seen))
    unknown = sorted(set(seen) - set(DEFAULTS))
    twice = sorted(f"{k}: {v}" for k, v in seen.items() if len(v) > 1)
    assert not missing, f"run-config keys no guide's key table documents: {missing}"
    assert not unknown, f"key tables document keys pyproject.toml does not have: {unknown}"
    assert not twice, f"keys documented in more than one key table: {twice}"
    assert not wrong, f"defaults that differ from pyproject.toml: {wrong}"
    table = hooks.run_config_table()
    assert all(f"`{key}`" in table for key in DEFAULTS)  # the reference page gets them all


API_PAGES = "\n".join(p.read_text() for p in (DOCS / "reference" / "api").glob("*.md"))


def _undocumented(name: str) -> list[str]:
    """What the docstring of ``flwr_privacy.<name>`` lacks: itself, or a parameter's name."""
    obj = getattr(flwr_privacy, name)
    doc = inspect.getdoc(obj) or ""
    if not doc.strip():
        return ["a docstring"]
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return []
    plain = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = [name for name, p in params.items() if p.kind in plain
             and name not in ("msg", "context", "call_next")]  # Flower's mod signature  # fmt: skip
    full = doc + "\n" + (inspect.getdoc(getattr(obj, "__init__", None)) or "")
    return [f"parameter {p!r}" for p in names if not re.search(rf"\b{re.escape(p)}\b", full)]


def test_every_public_name_is_in_the_api_reference_and_documented() -> None:
    names = flwr_privacy.__all__
    assert len(names) >= 40
    directives = set(re.findall(r"^::: ([\w.]+)", API_PAGES, flags=re.M))
    referenced = {d.rsplit(".", 1)[1] for d in directives}
    absent = sorted(set(names) - referenced)
    lacking = {n: gaps for n in names if (gaps := _undocumented(n))}
    documented = len(names) - len(lacking)
    print(f"{documented} of {len(names)} public names documented (docstring + every parameter)")
    assert not absent, f"public names missing from docs/reference/api: {absent}"
    assert not lacking, f"public names whose docstrings lack: {lacking}"


def test_every_toolkit_module_the_app_uses_is_in_the_api_reference() -> None:
    """The building blocks this app reaches every mode with are documented API, in full."""
    import ast
    import importlib

    used = set()
    for package in ("app", "strategies", "tasks"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("flwr_"):
                    used |= {node.module for a in node.names if a.name not in flwr_privacy.__all__}
    page = (DOCS / "reference" / "api" / "building-blocks.md").read_text()
    listed = dict(re.findall(r"^::: ([\w.]+)\n(?:    .*\n)*?      members: \[(.*)\]", page, re.M))
    assert len(used) > 15
    missing = used - set(listed)
    assert not missing, f"modules the app uses, missing from the API reference: {missing}"
    stale = {}
    for module, members in listed.items():
        names = importlib.import_module(module).__all__
        public = [n for n in names if n not in flwr_privacy.__all__]
        if [m.strip() for m in members.split(",")] != public:
            stale[module] = public
    assert not stale, f"building-blocks.md members differ from the modules' __all__: {stale}"


MARK = re.compile(r"<!-- not run: (.+?) -->")


def python_blocks() -> list[tuple[str, int, str, str | None]]:
    """(page, line, code, reason it is not run or None) for every ```python block."""
    blocks = []
    for page in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip() == "```python":
                end = lines.index("```", i + 1)
                mark = MARK.search(lines[i - 1]) if i else None
                code = "\n".join(lines[i + 1 : end])
                where = page.relative_to(ROOT).as_posix()
                blocks.append((where, i + 1, code, mark.group(1) if mark else None))
    return blocks


@pytest.mark.slow(seconds=30)
def test_every_python_block_runs_or_says_why_not(tmp_path: Path) -> None:
    blocks = python_blocks()
    marked = [(p, n, why) for p, n, _, why in blocks if why is not None]
    run = [(p, n, code) for p, n, code, why in blocks if why is None]
    print(f"{len(blocks)} Python blocks: {len(run)} executed, {len(marked)} marked not run")
    assert all(len(why) > 20 for _, _, why in marked), "a block marked not run says why"
    assert len(run) >= 4
    failed = []
    for page, line, code in run:
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, env=_env())  # fmt: skip
        if done.returncode != 0:
            failed.append(f"{page}:{line}: {done.stderr.strip().splitlines()[-1:]}")
    assert not failed, f"Python blocks in the docs that fail: {failed}"


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built with ``mkdocs build --strict`` (warnings fail it)."""
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**_env(), "NO_MKDOCS_2_WARNING": "1"})  # fmt: skip
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-4000:]}"
    return out


@pytest.mark.slow(seconds=60)
def test_site_builds_strict_with_generated_reference(site: Path) -> None:
    run_config = (site / "reference" / "run-config" / "index.html").read_text()
    assert all(f"<code>{key}</code>" in run_config for key in DEFAULTS)
    cli = (site / "reference" / "cli" / "index.html").read_text()
    for command in ("flwr_privacy.keys generate", "app.superlink wait", "app.final_model",
                    "app.deploy.local"):  # fmt: skip
        assert f"$ python -m {command}" in cli, command
    assert cli.count("usage:") >= 10  # each command's own --help, captured at build time
    api = (site / "reference" / "api" / "secagg" / "index.html").read_text()
    assert "SecAggSettings" in api and "threshold" in api


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    handler = functools.partial(_Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _browser() -> Any:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("no browser: apt-get install chromium chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1600"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def _guides() -> list[str]:
    """The titles under "Guides" in mkdocs.yml's nav."""
    import yaml  # mkdocs' own dependency

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    guides = next(entry["Guides"] for entry in nav if "Guides" in entry)
    return [title for entry in guides for title in entry]


@pytest.mark.slow(seconds=40)
def test_site_in_a_real_browser(served: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _browser()
    try:
        browser.get(served + "/")
        assert "flower-privacy" in browser.title
        assert browser.find_element(By.CSS_SELECTOR, "article h1").text == "flower-privacy"
        links = browser.find_elements(By.CSS_SELECTOR, "nav.md-nav a.md-nav__link")
        nav = {a.get_attribute("textContent").strip() for a in links}
        guides = _guides()
        assert len(guides) >= 12
        assert not [g for g in guides if g not in nav], f"guides missing from the nav: {nav}"

        box = WebDriverWait(browser, 20).until(  # the header's search field, as a reader uses it
            ec.element_to_be_clickable((By.CSS_SELECTOR, "input.md-search__input")))
        box.click()
        box.send_keys("SecAgg")
        WebDriverWait(browser, 30).until(
            lambda b: b.find_elements(By.CSS_SELECTOR, ".md-search-result__item"))
        hits = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".md-search-result__item")]
        assert any("SecAgg" in hit for hit in hits), hits[:5]

        browser.get(served + "/guides/secagg/")
        assert "Secure aggregation (SecAgg+)" in browser.find_element(By.TAG_NAME, "h1").text
        shot = tmp_path / "secagg-guide.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 20_000
        print(f"screenshot of the SecAgg+ guide: {shot}")
    finally:
        browser.quit()
