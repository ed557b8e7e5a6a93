"""End to end in a real browser: headless Chromium loads the page, uploads an image, asks, follows up.

The server is the real app under uvicorn; the model is a scripted double so the answer (and so
the highlighted evidence) is known. Needs Debian's ``chromium`` and Playwright for Python
(``.ci/install-browser.sh``); skipped with the reason when either is missing. Never run
``playwright install``: the test drives the system browser.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from selfsynth.serve.server import ServerThread, create_app

CHROMIUM = os.environ.get("SELFSYNTH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CONCEPTS = {
    "Scarlet Finch": ["bright red crown", "white wing bars"],
    "Blue Robin": ["blue back", "long tail"],
}
FIRST = "This is a Scarlet Finch because it has a bright red crown and white wing bars."
FOLLOW_UP = "Its long tail is forked at the tip."


class Scripted:
    """A model double: fixed answers, and a record of what the page sent."""

    def __init__(self) -> None:
        self.generated: list[tuple[tuple[int, int], str]] = []
        self.chats: list[tuple[tuple[int, int], list[dict[str, str]]]] = []

    def generate(self, images, prompts, **kw):
        self.generated += [(im.size, p) for im, p in zip(images, prompts, strict=True)]
        return [[FIRST] for _ in prompts]

    def chat(self, image, messages, **kw):
        self.chats.append((image.size, [dict(m) for m in messages]))
        return FOLLOW_UP


def _png_base64(folder: Path) -> str:
    path = folder / "other.png"
    Image.new("RGB", (16, 16), (20, 40, 200)).save(path)
    return base64.b64encode(path.read_bytes()).decode()


@pytest.fixture
def browser_page(tmp_path):
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM}; run .ci/install-browser.sh (apt-get install chromium)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright for Python is not installed; run .ci/install-browser.sh"
    )
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport={"width": 1100, "height": 760},
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def test_page_upload_ask_highlight_follow_up(browser_page, tmp_path):
    page = browser_page
    backend = Scripted()
    app = create_app(backend, model_id="fake-finch", concepts=CONCEPTS)
    image = tmp_path / "bird.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(image)
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on(
        "console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
    )

    with ServerThread(app) as server:

        def only_local(route):
            if route.request.url.startswith(server.url):
                route.continue_()
            else:
                problems.append(f"external request: {route.request.url}")
                route.abort()

        page.route("**/*", only_local)
        page.goto(server.url + "/")
        page.wait_for_function("document.getElementById('model').textContent.includes('fake-finch')")

        page.click("#send")  # no image yet: a clear message, no request
        assert "image first" in page.inner_text("#error")

        page.set_input_files("#file", str(image))
        page.wait_for_selector("#preview:not([hidden])")
        assert page.input_value("#question") == "What is this and why?"
        page.click("#send")
        page.wait_for_selector(".turn.assistant mark.ev")

        answer = page.locator(".turn.assistant").first
        assert answer.locator(".answer").inner_text() == FIRST
        marks = answer.locator("mark.ev").all_inner_texts()
        assert marks == ["Scarlet Finch", "bright red crown", "white wing bars"]
        assert answer.locator(".evidence li").all_inner_texts() == [
            "Scarlet Finch",
            "bright red crown",
            "white wing bars",
        ]
        assert backend.generated == [((40, 30), "What is this and why?")]

        page.fill("#question", "What about the tail?")
        page.click("#send")
        page.wait_for_function("document.querySelectorAll('.turn.assistant').length === 2")
        second = page.locator(".turn.assistant").nth(1)
        assert second.locator("mark.ev").all_inner_texts() == ["long tail"]
        assert backend.chats == [
            (
                (40, 30),
                [
                    {"role": "user", "content": "What is this and why?"},
                    {"role": "assistant", "content": FIRST},
                    {"role": "user", "content": "What about the tail?"},
                ],
            )
        ]
        shot = tmp_path / "page.png"
        page.screenshot(path=str(shot), full_page=True)

        # Dropping another image starts a new conversation with it.
        page.evaluate(
            """(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], "other.png", { type: "image/png" }));
            document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: dt }));
        }""",
            _png_base64(tmp_path),
        )
        page.wait_for_function("document.getElementById('drop-text').textContent.startsWith('other.png')")
        assert page.locator(".turn").count() == 0
        assert page.input_value("#question") == "What is this and why?"
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    assert problems == []
