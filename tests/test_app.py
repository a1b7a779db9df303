"""The Gradio app end to end in a real headless browser: Chromium (Debian's `chromium` and `chromium-driver`) driven by
selenium uploads an image, picks a task, runs it and reads the result; a corrupt file gets a clear message. With
`LM4LV_APP_SCREENSHOT=PATH` the first test also saves a screenshot there (the documentation's picture of the app)."""

import io
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

from lm4lv.modeling_lm4lv import LM4LVForConditionalGeneration
from lm4lv.processing import LM4LVProcessor

from conftest import free_port, tiny_tokenizer

pytest.importorskip("gradio", reason="the app needs the app extra: pip install -e '.[app]'")
pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (the dev extra)")
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="the browser test needs Chromium and its driver (Debian: apt-get install chromium chromium-driver)",
)
TIMEOUT = 120


@pytest.fixture(scope="module")
def app_url(base_model_dirs, tmp_path_factory):
    """`lm4lv app` serving a tiny trainable-only checkpoint (tasks denoise and flip) on a free port."""
    llm, vision = base_model_dirs
    folder = tmp_path_factory.mktemp("app_ckpt")
    torch.manual_seed(0)
    model = LM4LVForConditionalGeneration.from_base_models(llm, vision, task_names=["denoise", "flip"],
                                                           task_token_length=3)
    model.save_pretrained(folder)
    LM4LVProcessor.from_config(model.config, tiny_tokenizer()).save_pretrained(folder)
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    server = subprocess.Popen([sys.executable, "-m", "lm4lv.cli", "app", "--model", str(folder), "--port", str(port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + TIMEOUT
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                pytest.fail(f"the app did not start:\n{server.stdout.read()[-4000:]}")
            time.sleep(1)
    yield url
    server.terminate()
    server.wait(timeout=30)


def wait_for(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, TIMEOUT).until(condition, message=f"timed out waiting for {what}")


def upload_and_run(browser, url, path, task: str):
    from selenium.webdriver.common.by import By

    browser.get(url)
    upload = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#upload input[type=file]"), "the upload")
    upload.send_keys(str(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    wait_for(browser, lambda d: stem in d.find_element(By.ID, "upload").text, "the uploaded file")
    browser.find_element(By.CSS_SELECTOR, f"#task [data-testid='{task}-radio-label']").click()
    browser.find_element(By.ID, "run").click()


def test_the_app_restores_an_uploaded_image(app_url, browser, tmp_path):
    from selenium.webdriver.common.by import By

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (37, 50, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    upload_and_run(browser, app_url, tmp_path / "photo.png", "denoise")
    result = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#lm4lv img").get_attribute("src"),
                      "LM4LV's output")
    restored = Image.open(io.BytesIO(urllib.request.urlopen(result, timeout=30).read()))
    assert restored.size == (50, 37)  # the input's size: tiled, blended, cropped back
    status = browser.find_element(By.ID, "status").text
    assert "No clean reference" in status
    assert "Error" not in browser.find_element(By.TAG_NAME, "body").text
    if os.environ.get("LM4LV_APP_SCREENSHOT"):  # the documentation's picture of the app (docs/guides/restoring.md)
        assert browser.save_screenshot(os.environ["LM4LV_APP_SCREENSHOT"])


def test_a_corrupt_file_gets_a_clear_message(app_url, browser, tmp_path):
    from selenium.webdriver.common.by import By

    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    upload_and_run(browser, app_url, tmp_path / "broken.png", "flip")
    wait_for(browser, lambda d: "Cannot use this file" in d.find_element(By.ID, "status").text, "the message")
    status = browser.find_element(By.ID, "status").text
    assert "broken.png: cannot read image" in status and "Traceback" not in status
