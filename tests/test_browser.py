"""The app in a real browser: headless Debian chromium driven by Playwright, against the app served in-process.

Screenshots go to pytest's tmp dir, and also to $CD_SCREENSHOT_DIR when it is set. Without chromium or Playwright the
tests skip, except in CI (CI set), where they must run.
"""

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image
from serving import free_port

from decoding.methods import METHOD_TITLES, METHODS
from demo.examples import EXAMPLES_DIR
from demo.model_pool import EMBEDDED_MODEL_DIR, TINY_MODEL, ModelPool
from demo.ui import build_ui, launch

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MAX_PIXELS = 1_000_000
MAX_FILE_SIZE = "1mb"
RUN_TIMEOUT_MS = 60_000


def _playwright():
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "the playwright package is not installed (pip install -r requirements-dev.txt)"
    if missing is None and not os.path.exists(CHROMIUM):
        missing = f"{CHROMIUM} is missing (apt-get install chromium)"
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests must run in CI: {missing}")
        pytest.skip(missing)
    return sync_playwright


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _playwright()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def url(browser):
    pool = ModelPool([TINY_MODEL])
    pool.get(pool.default)
    blocks = build_ui(pool, max_pixels=MAX_PIXELS)
    _, address, _ = launch(
        blocks, host="127.0.0.1", port=free_port(), max_file_size=MAX_FILE_SIZE, prevent_thread_lock=True, quiet=True
    )
    yield address
    blocks.close()


@pytest.fixture
def page(browser, url):
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(RUN_TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#cd-run")
    yield page
    context.close()


@pytest.fixture
def screenshot(tmp_path):
    wanted = os.environ.get("CD_SCREENSHOT_DIR")

    def save(page, name: str) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if wanted:
            os.makedirs(wanted, exist_ok=True)
            shutil.copy(path, Path(wanted) / path.name)
        return path

    return save


# ---- helpers that act like a visitor -------------------------------------------------------------------------------
def upload(page, path) -> None:
    page.locator("#cd-image input[type=file]").set_input_files(str(path))


def ask(page, question: str) -> None:
    page.locator("#cd-question textarea").fill(question)


def choose(page, dropdown_id: str, option: str) -> None:
    page.locator(f"#{dropdown_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def set_max_new_tokens(page, count: int) -> None:
    box = page.locator("#cd-max-new-tokens input[type=number]")
    box.fill(str(count))
    box.press("Enter")


def download_name(page) -> str:
    link = page.locator("#cd-download a[download]")
    return link.first.get_attribute("download") if link.count() else ""


def compare_and_wait(page, while_running: str | None = None) -> str:
    """Click Compare and wait until this run (not the previous one) has ended; returns the status line.

    while_running: a JavaScript condition that must come true before the run ends (to see its progress)."""
    before = download_name(page)
    page.locator("#cd-run").click()
    if while_running is not None:
        page.wait_for_function(while_running)
    page.wait_for_function(
        """(before) => {
            const link = document.querySelector('#cd-download a[download]');
            const status = document.querySelector('#cd-status').innerText.trim();
            return link && link.getAttribute('download') !== before && /^(Done|Stopped)/.test(status);
        }""",
        arg=before,
    )
    return page.locator("#cd-status").inner_text().strip()


def tokens(page, side: str):
    return page.locator(f"#cd-{side}-answer [data-token]")


def expect_error(page, text: str) -> None:
    page.locator(".toast-body", has_text=text).first.wait_for(state="visible", timeout=15_000)


# ---- tests -----------------------------------------------------------------------------------------------------------
def test_each_method_streams_both_panels_and_a_selected_token_shows_its_heatmap(page, screenshot):
    assert page.locator("#cd-notice").is_visible()  # the untrained model says so
    upload(page, EXAMPLES_DIR / "coffee.jpg")
    ask(page, "Is there a spoon in the image?")
    set_max_new_tokens(page, 6)
    for method in METHODS:
        choose(page, "cd-method", METHOD_TITLES[method])
        # CODE's description pre-step (512 tokens on this image) reports its progress over the status line.
        progress = "document.querySelector('#cd-status').innerText.includes('describing the image')"
        assert compare_and_wait(page, progress if method == "code" else None).startswith("Done")
        baseline, contrasted = tokens(page, "baseline"), tokens(page, "method")
        assert 1 <= baseline.count() <= 6 and 1 <= contrasted.count() <= 6
        assert METHOD_TITLES[method] in page.locator("#cd-branch-notes").inner_text()
        assert page.locator("#cd-branch-images img").count() >= 1

        index = contrasted.count() - 1
        contrasted.nth(index).click()
        page.locator("#cd-method-attention img").wait_for(state="visible")
        assert "looked" in page.locator("#cd-method-attention").inner_text()
        candidates = page.locator("#cd-method-candidates table")
        candidates.wait_for(state="visible")
        assert "final" in candidates.inner_text() and "original" in candidates.inner_text()
        assert f"Token {index}:" in page.locator("#cd-method-candidates").inner_text()
        assert "cd-selected" in (contrasted.nth(index).get_attribute("class") or "")
        shot = screenshot(page, f"method-{method}")
        with Image.open(shot) as image:
            assert image.width == 1400 and image.height > 1100


def test_example_gallery_token_picker_and_colour_modes(page, screenshot):
    # An example from the gallery fills in both the image and its question.
    page.locator("#cd-examples button.gallery-item").nth(3).click()
    page.wait_for_function("document.querySelector('#cd-question textarea').value.includes('red circle')")
    page.locator("#cd-image img").wait_for(state="visible")
    set_max_new_tokens(page, 5)
    assert compare_and_wait(page).startswith("Done")

    # The picker is the keyboard-friendly way to select: pick the baseline's third token.
    page.locator("#cd-baseline-token input").click()
    options = page.get_by_role("option")
    options.first.wait_for(state="visible")
    # one option per token of the answer (the heatmap may render a moment after the picker under a busy CPU)
    page.wait_for_function(
        "(n) => document.querySelectorAll('#cd-baseline-answer [data-token]').length === n", arg=options.count()
    )
    options.nth(2).click()
    page.locator("#cd-baseline-attention img").wait_for(state="visible")
    page.wait_for_function("document.querySelector('#cd-baseline-candidates').innerText.includes('Token 2:')")
    assert "cd-selected" in (tokens(page, "baseline").nth(2).get_attribute("class") or "")

    # Colouring by confidence changes the legend and the tokens' colours.
    before = [tokens(page, "method").nth(i).get_attribute("style") for i in range(tokens(page, "method").count())]
    page.locator("#cd-colour-by").get_by_text("confidence", exact=True).click()
    page.wait_for_function("document.querySelector('#cd-legend').innerText.startsWith('confidence')")
    after = [tokens(page, "method").nth(i).get_attribute("style") for i in range(tokens(page, "method").count())]
    assert after != before
    screenshot(page, "token-picker-confidence")


@pytest.mark.parametrize(
    "case, expected",
    [
        ("no image", "No image"),
        ("empty question", "the question is empty"),
        ("corrupt file", "could not be read as an image"),
        ("huge image", "the limit is 1 megapixels"),
        ("file over the upload limit", "exceed the maximum allowed size"),
    ],
)
def test_bad_input_gets_a_clear_message_and_the_app_keeps_serving(page, tmp_path, screenshot, case, expected):
    set_max_new_tokens(page, 3)
    ask(page, "What is this?")
    if case == "empty question":
        upload(page, EXAMPLES_DIR / "cat.jpg")
        ask(page, "  ")
    elif case == "corrupt file":
        corrupt = tmp_path / "photo.jpg"
        corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a JPEG" * 20)
        upload(page, corrupt)
    elif case == "huge image":
        huge = tmp_path / "huge.png"
        Image.new("RGB", (1200, 1000), (200, 100, 50)).save(huge)  # 1.2 MP against this server's 1 MP
        upload(page, huge)
    elif case == "file over the upload limit":
        noisy = tmp_path / "noisy.bmp"
        Image.effect_noise((800, 800), 60).convert("RGB").save(noisy)  # about 1.9 MB against this server's 1 MB
        upload(page, noisy)
    if case != "file over the upload limit":
        page.locator("#cd-run").click()
    expect_error(page, expected)
    screenshot(page, f"bad-input-{case.replace(' ', '-')}")

    upload(page, EXAMPLES_DIR / "cat.jpg")
    ask(page, "What is this?")
    assert compare_and_wait(page).startswith("Done")
    assert tokens(page, "baseline").count() >= 1 and tokens(page, "method").count() >= 1


def test_stop_button_stops_a_long_run(page, screenshot):
    upload(page, EXAMPLES_DIR / "cat.jpg")
    ask(page, "What is this?")
    choose(page, "cd-method", METHOD_TITLES["m3id"])
    set_max_new_tokens(page, 256)
    page.locator("#cd-run").click()
    page.wait_for_function("document.querySelector('#cd-status').innerText.startsWith('Generating')")
    page.locator("#cd-stop").click()
    page.wait_for_function("document.querySelector('#cd-status').innerText.startsWith('Stopped')")
    assert "(stopped)" in page.locator("#cd-status").inner_text()
    written = tokens(page, "baseline").count()
    assert 1 <= written < 100
    assert "[stopped]" in page.locator("#cd-baseline-answer").inner_text()
    page.locator("#cd-download a[download]").wait_for(state="visible")  # the partial run can be downloaded
    screenshot(page, "stopped")


# ---- the shapes-world lab, with the embedded model ------------------------------------------------------------------
@pytest.fixture(scope="module")
def embedded_url(browser):
    pool = ModelPool([str(EMBEDDED_MODEL_DIR)])
    pool.get(pool.default)
    blocks = build_ui(pool, max_pixels=MAX_PIXELS)
    _, address, _ = launch(blocks, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True)
    yield address
    blocks.close()


def test_new_scene_marks_both_answers_against_the_ground_truth_and_keeps_score(browser, embedded_url, screenshot):
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(RUN_TIMEOUT_MS)
    page.goto(embedded_url)
    page.wait_for_selector("#cd-run")
    assert page.locator("#cd-embedded-notice").is_visible()
    # The shapes scenes come first in the gallery when the embedded model is served.
    assert "shapes-" in (page.locator("#cd-examples button.gallery-item img").first.get_attribute("src") or "")

    page.locator("#cd-new-scene").click()
    page.wait_for_function("document.querySelector('#cd-scene-caption').innerText.includes('Ground truth')")
    page.locator("#cd-image img").wait_for(state="visible")
    assert page.locator("#cd-question textarea").input_value().strip()
    set_max_new_tokens(page, 24)
    status = compare_and_wait(page)
    assert "Ground truth:" in status
    for side in ("baseline", "method"):
        assert page.locator(f"#cd-{side}-answer .cd-mark").count() >= 1
    page.locator("#cd-score").get_by_text("1 scored run").wait_for()

    # A gallery scene (a circle without its square, asked for the square) is recognised and scored too.
    page.locator("#cd-examples button.gallery-item").first.click()
    page.wait_for_function("document.querySelector('#cd-question textarea').value.includes('square')")
    page.wait_for_function("document.querySelector('#cd-scene-caption').innerText.includes('#1600000005')")
    status = compare_and_wait(page)
    assert 'The true answer is "no"' in status
    mark = page.locator("#cd-baseline-answer .cd-mark").first
    answer = tokens(page, "baseline").first.inner_text().strip()
    assert mark.inner_text() == ("✗" if answer == "yes" else "✓")
    page.locator("#cd-score").get_by_text("2 scored runs").wait_for()
    assert "Baseline" in page.locator("#cd-score").inner_text()
    screenshot(page, "shapes-lab")
    context.close()
