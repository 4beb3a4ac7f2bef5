"""`nadm studio` in a real browser (Debian's headless Chromium through Selenium) on the tiny models: make a clip from a
prompt, animate a painting with a brushed still region, interpolate a clip, reuse a clip's settings from the gallery,
and two browser sessions generating at once. A screenshot of each tab is saved under the test's tmp folder (and into
$NADM_STUDIO_SCREENSHOTS when set: that is how docs/studio.png is made)."""

import hashlib
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from browser import headless_chromium
from studio_helpers import TINY, Api, studio  # noqa: F401 - studio is a fixture

from nadm.io import read_sidecar, read_video

PAINTING = "paintings/stevenling_landscape/shanshui_test_118.jpg"  # 458x458
WAIT = 90  # seconds: a tiny clip takes about a second, the page a few on a loaded 2-core machine


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (tests/browser.py), or a skip that says what is missing."""
    with headless_chromium(window_size="1280,1500") as driver:
        yield driver


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """Where the screenshots go (a test artifact); also $NADM_STUDIO_SCREENSHOTS when set."""
    folder = tmp_path_factory.mktemp("studio-screenshots")
    extra = os.environ.get("NADM_STUDIO_SCREENSHOTS")

    def save(driver, name: str) -> Path:
        time.sleep(0.5)  # let the page settle (videos, toasts)
        path = folder / name
        assert driver.save_screenshot(str(path))
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(extra) / name)
        return path

    return save


def by(css: str):
    from selenium.webdriver.common.by import By

    return By.CSS_SELECTOR, css


def wait_for(driver, condition, timeout: float = WAIT):
    from selenium.webdriver.support.wait import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)


def open_studio(driver, url: str, tab: str = "generate") -> None:
    driver.get(url)
    wait_for(driver, lambda d: d.find_elements(*by(f"#tab-{tab}-button")))
    driver.find_element(*by(f"#tab-{tab}-button")).click()


def fill(driver, elem_id: str, value) -> None:
    """Type into a text or number field as a user would (select all, type, leave the field)."""
    from selenium.webdriver.common.keys import Keys

    field = driver.find_element(*by(f"#{elem_id} input, #{elem_id} textarea"))
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE)
    field.send_keys(str(value))
    field.send_keys(Keys.TAB)


def fill_tiny(driver, prefix: str, **extra) -> None:
    for name, value in {**TINY, **extra}.items():
        fill(driver, f"{prefix}-{name}", value)


def wait_video(driver, elem_id: str) -> str:
    """The src of the video shown in `elem_id` once it has loaded and can play."""
    script = f"const v = document.querySelector('#{elem_id} video'); return v && !v.error && v.readyState >= 2 ? v.src : null"
    return wait_for(driver, lambda d: d.execute_script(script))


def status(driver, prefix: str) -> str:
    return driver.find_element(*by(f"#{prefix}-status")).text


def clips_with(outputs: Path, key: str, value) -> list[Path]:
    return sorted(p for p in outputs.glob("*.mp4") if (read_sidecar(p) or {}).get(key) == value)


# -------------------------------------------------------------------------------------------------- tabs


def test_text_to_video_in_the_browser(studio, browser, shots):
    open_studio(browser, studio.url, "generate")
    fill(browser, "t2v-prompt", "browser: ink mountains in mist")
    fill_tiny(browser, "t2v")
    browser.find_element(*by("#t2v-make")).click()
    src = wait_video(browser, "t2v-video")
    assert "/gradio_api/file=" in src
    (clip,) = clips_with(studio.outputs, "prompt", "browser: ink mountains in mist")
    sidecar = read_sidecar(clip)
    assert sidecar["keyframes"] == 4 and sidecar["frames"] == 7 and sidecar["size"] == {"height": 64, "width": 64}
    assert clip.name in status(browser, "t2v") and f"seed {sidecar['seed']}" in status(browser, "t2v")
    shots(browser, "text-to-video.png")


def test_animate_a_painting_with_a_brushed_still_region(studio, browser, shots, shared_data):
    from selenium.webdriver.common.action_chains import ActionChains

    from nadm.animate import prepare_painting

    painting = shared_data / PAINTING
    open_studio(browser, studio.url, "animate")
    browser.find_element(*by("#anim-upload input[type=file]")).send_keys(str(painting))
    wait_for(browser, lambda d: "Brush what stays still" in status(d, "anim"))
    canvas = browser.find_element(*by("#anim-editor canvas"))
    # brush a band across the upper middle of the painting (the brush is the editor's default tool)
    ActionChains(browser).move_to_element_with_offset(canvas, -50, -60).click_and_hold().move_by_offset(100, 0) \
        .move_by_offset(0, 25).move_by_offset(-100, 0).release().perform()  # fmt: skip
    fill(browser, "anim-prompt", "browser: mist drifting over the painting")
    fill_tiny(browser, "anim")
    browser.find_element(*by("#anim-make")).click()
    wait_video(browser, "anim-video")
    (clip,) = clips_with(studio.outputs, "prompt", "browser: mist drifting over the painting")
    a = read_sidecar(clip)["animate"]
    assert a["image"]["sha256"] == hashlib.sha256(painting.read_bytes()).hexdigest()
    assert a["still_mask"] is not None and 0 < a["still_fraction"] < 0.5  # the brushed band, not the whole painting
    mask = Path(a["still_mask"]["source"])
    assert mask.parent == studio.outputs.resolve() / "inputs" and mask.is_file()
    # frame 0 is the painting: the decoded first frame of the mp4 against nadm's fitted painting, within the codec's
    # tolerance (H.264 CRF 18 at 64x64); the later frames are further from it
    fitted = prepare_painting(painting, None, "crop", 64, 64).pixels.astype(np.float32)
    frames, _ = read_video(clip)
    first = np.abs(frames[0].astype(np.float32) - fitted).mean()
    assert first < 4.0, first  # measured 2.35
    assert np.abs(frames[-1].astype(np.float32) - fitted).mean() > first
    shots(browser, "animate.png")


def test_interpolate_a_clip_in_the_browser(studio, browser, shots):
    source = studio.outputs / "interpolate-me.mp4"
    from nadm.io import write_video

    ramp = np.stack([np.roll(np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (64, 1, 3)), 4 * i, 1)
                     for i in range(5)])  # fmt: skip
    write_video(ramp, source, 8)
    open_studio(browser, studio.url, "interpolate")
    browser.find_element(*by("#interp-upload input[type=file]")).send_keys(str(source))
    wait_for(browser, lambda d: d.find_elements(*by("#interp-upload a, #interp-upload .file-name, #interp-upload td")))
    browser.find_element(*by("#interp-make")).click()
    wait_video(browser, "interp-video")
    (clip,) = [p for p in studio.outputs.glob("*-interpolate-*.mp4")]
    i = read_sidecar(clip)["interpolation"]
    assert (i["input"], i["frames_in"], i["frames_out"], i["method"]) == ("interpolate-me.mp4", 5, 9, "sofp")
    shots(browser, "interpolate.png")


def test_gallery_reuses_a_clips_settings(studio, browser, shots):
    api = Api(studio.url)
    form = {"t2v-prompt": "browser: gallery clip", "t2v-random-seed": False, "t2v-seed": 1234,
            **{f"t2v-{k}": v for k, v in TINY.items()}, "t2v-guidance": 6.5, "t2v-sampler": "euler"}  # fmt: skip
    assert api.submit("generate", form).wait()["success"]
    open_studio(browser, studio.url, "gallery")
    wait_for(browser, lambda d: "clips in" in d.find_element(*by("#gallery-summary")).text)
    thumbnails = wait_for(browser, lambda d: d.find_elements(*by("#gallery-clips .thumbnail-item")))
    assert len(thumbnails) == len(list(studio.outputs.glob("*.mp4.json")))
    thumbnails[0].click()  # newest first: the clip just made
    wait_for(browser, lambda d: "browser: gallery clip" in d.find_element(*by("#gallery-settings")).text)
    shots(browser, "gallery.png")
    browser.find_element(*by("#gallery-use")).click()
    wait_for(browser, lambda d: d.find_element(*by("button[role=tab][aria-selected=true]")).text == "Text to video")
    value = lambda elem_id: browser.find_element(*by(f"#{elem_id} input, #{elem_id} textarea")).get_attribute("value")  # noqa: E731
    wait_for(browser, lambda d: value("t2v-prompt") == "browser: gallery clip")
    assert (value("t2v-seed"), value("t2v-frames"), value("t2v-guidance")) == ("1234", "4", "6.5")
    assert not browser.find_element(*by("#t2v-random-seed input")).is_selected()
    assert value("t2v-sampler") == "euler"


def test_two_browser_sessions_submitting_at_once(studio, browser):
    windows = {}
    for name in ("A", "B"):
        if name == "B":
            browser.switch_to.new_window("tab")
        windows[name] = browser.current_window_handle
        open_studio(browser, studio.url, "generate")
        fill(browser, "t2v-prompt", f"browser: window {name}")
        fill_tiny(browser, "t2v", steps=8)
    before = len(studio.jobs())
    for name in ("A", "B"):  # press Generate in both, one right after the other
        browser.switch_to.window(windows[name])
        browser.find_element(*by("#t2v-make")).click()
    for name in ("B", "A"):
        browser.switch_to.window(windows[name])
        wait_video(browser, "t2v-video")
        (clip,) = clips_with(studio.outputs, "prompt", f"browser: window {name}")
        assert Path(f"{clip}.json").is_file()
    time.sleep(0.5)
    jobs = [line.split(") ")[1].split()[0] for line in studio.jobs()[before:]]
    assert jobs == ["started", "finished", "started", "finished"], studio.jobs()[before:]
    browser.switch_to.window(windows["B"])
    browser.close()
    browser.switch_to.window(windows["A"])
