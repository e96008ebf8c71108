"""`serialgen serve`: input checks, the job the button runs, and the app end to end in headless
Chromium (Debian's chromium, driven by Playwright): upload, generate, see the images; a bad
upload gets its one-line message on the page."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serialgen.pipelines.serial import SerialGenPipeline
from serialgen.serve import ServeLimits, check_upload, parse_prompts, run_series

from .tiny import tiny_serial_models


@pytest.fixture(scope="module")
def pipe(tmp_path_factory, dataset):
    root = tiny_serial_models(tmp_path_factory.mktemp("serve_models"), dataset)
    pipe = SerialGenPipeline.from_pretrained(standardizer=root / "stage1", base=root / "sd15",
                                             image_encoder=root / "image_encoder",
                                             adapter=root / "adapter" / "ip-adapter.safetensors")
    return pipe


@pytest.fixture(scope="module")
def reference(tmp_path_factory, small_world):
    path = tmp_path_factory.mktemp("upload") / "my character.png"
    Image.fromarray(small_world.sample(1, 0)["image"]).save(path)
    return path


def test_prompts_are_lines_within_the_limit():
    assert parse_prompts("# a series\na character, waving\n\n  a character, running  \n", 4) == [
        "a character, waving", "a character, running"]
    with pytest.raises(ValueError, match="at least one prompt"):
        parse_prompts("\n# only a comment\n", 4)
    with pytest.raises(ValueError, match="at most 2 per job"):
        parse_prompts("a\nb\nc", 2)


def test_bad_uploads_are_named_as_the_user_knows_them(tmp_path, reference):
    assert check_upload(str(reference), ServeLimits()).size == (128, 192)
    text = tmp_path / "holiday.png"
    text.write_text("not a picture")
    with pytest.raises(ValueError, match=r"^holiday.png is not an image"):
        check_upload(str(text), ServeLimits())
    with pytest.raises(ValueError, match="larger than 1 MB"):
        big = tmp_path / "big.png"
        big.write_bytes(b"\0" * (2 * 2**20))
        check_upload(str(big), ServeLimits(max_upload_mb=1))
    with pytest.raises(ValueError, match="128x192 pixels: upload one under"):
        check_upload(str(reference), ServeLimits(max_pixels=10_000))
    with pytest.raises(ValueError, match="Upload a reference image"):
        check_upload(None, ServeLimits())
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # a few kB, 400 megapixels decoded: Pillow's bomb error
    with pytest.raises(ValueError, match=r"^bomb.png is too large to decode safely: upload one under 16 megapixels"):
        check_upload(str(bomb), ServeLimits())


def test_the_job_draws_every_prompt_from_one_standardized_reference(pipe, reference):
    pipe.progress = False
    result = run_series(pipe, str(reference), "a character, waving\na character, running\na character, sitting",
                        steps=2, use_pose=False, seed=3)
    assert len(result.images) == 3 and result.standardized.size == (128, 192)
    assert result.reference.size == (128, 192)
    again = run_series(pipe, str(reference), "a character, waving", steps=2, use_pose=False, seed=3)
    # seeded per image: the same picture alone as in a batch of three (up to batched float rounding)
    assert np.abs(np.asarray(again.images[0], float) - np.asarray(result.images[0], float)).max() <= 2
    one_stage = run_series(pipe, str(reference), "a character, waving", steps=2, one_stage=True, use_pose=False,
                           seed=3)
    assert one_stage.standardized is None and len(one_stage.images) == 1
    with pytest.raises(ValueError, match="steps must be between"):
        run_series(pipe, str(reference), "a character", steps=0)


def test_the_series_downloads_as_a_zip_with_its_record(pipe, reference, tmp_path):
    import json
    import zipfile

    pipe.progress = False
    result = run_series(pipe, str(reference), "a character, waving\na character, running", steps=2, use_pose=False,
                        seed=3, guidance=3.0, method="consistent-attention")
    with zipfile.ZipFile(result.zip(tmp_path)) as archive:
        names = set(archive.namelist())
        record = json.loads(archive.read("series.json"))
    assert names == {"01.png", "02.png", "standardized.png", "sheet.png", "series.json"}
    assert record["method"] == "consistent-attention" and record["guidance"] == 3.0 and record["seed"] == 3
    assert record["prompts"] == ["a character, waving", "a character, running"]
    assert any("consistent self-attention" in n for n in record["notes"])
    with pytest.raises(ValueError, match="guidance must be between"):
        run_series(pipe, str(reference), "a character", steps=2, guidance=50.0)
    with pytest.raises(ValueError, match="method must be one of"):
        run_series(pipe, str(reference), "a character", steps=2, method="paint")


def test_the_examples_are_assets_shipped_in_the_package():
    from serialgen.serve import example_inputs

    (image, prompts), = example_inputs()
    assert Path(image).is_file() and "serialgen" in Path(image).parts and len(parse_prompts(prompts, 16)) >= 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_in_a_browser(pipe, reference, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian chromium is not installed (scripts/setup.sh installs it)")
    from serialgen.serve import serve

    port = _free_port()
    app = serve(pipe, port=port, default_steps=2, block=False)
    bad = tmp_path / "notes.png"
    bad.write_text("a text file with an image's name")
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page()
            page.set_default_timeout(120_000)
            wait = 120_000  # expect()'s own default is 5 s; a busy 2-core machine generates slower

            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("#reference input[type=file]").set_input_files(str(bad))
            page.locator("#generate").click()
            sync_api.expect(page.get_by_text("notes.png is not an image Pillow can read").first).to_be_visible(timeout=wait)

            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("#reference input[type=file]").set_input_files(str(reference))
            page.locator("#prompts textarea").fill("a character, waving, front view\na character, running, side view")
            page.locator("#use_pose input[type=checkbox]").uncheck()
            page.locator("#generate").click()
            sync_api.expect(page.locator("#series img")).to_have_count(2, timeout=wait)
            sync_api.expect(page.locator("#standardized img")).to_have_count(1)
            sync_api.expect(page.locator("#prepared img")).to_have_count(1)
            link = page.locator("#download a[download='series.zip']")
            sync_api.expect(link).to_have_count(1, timeout=wait)
            with page.expect_download() as download:
                link.click()
            import zipfile

            with zipfile.ZipFile(download.value.path()) as archive:  # the series as the user gets it
                assert {"01.png", "02.png", "series.json"} <= set(archive.namelist())
            page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
            browser.close()
    finally:
        app.close()


def test_a_full_queue_turns_jobs_away_with_a_message(pipe, reference):
    import threading
    import time

    gradio_client = pytest.importorskip("gradio_client")
    from serialgen.serve import serve

    release = threading.Event()

    class Held:  # the real pipeline, held until every job is in
        def __getattr__(self, name):
            return getattr(pipe, name)

        def __call__(self, *args, **kwargs):
            release.wait(60)
            return pipe(*args, **kwargs)

    port = _free_port()
    app = serve(Held(), port=port, limits=ServeLimits(queue_size=1), default_steps=1, block=False)
    try:
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        # reference, prompts, seed, steps, guidance, scale, method, one-stage, detect the person
        jobs = [client.submit(gradio_client.handle_file(str(reference)), "a character, waving", 0, 1, 5.0, 1.0,
                              "serialgen", False, False, api_name="/generate") for _ in range(4)]
        deadline = time.time() + 60  # every job answered: running, waiting, or turned away
        while sum(j.status().code.name in ("PROCESSING", "IN_QUEUE", "FINISHED") or j.done() for j in jobs) < 4 \
                and time.time() < deadline:
            time.sleep(0.2)
        release.set()
        outcomes = []
        for job in jobs:
            try:
                job.result(timeout=120)
                outcomes.append("done")
            except Exception as error:  # noqa: BLE001  (the client raises what the server said)
                outcomes.append(str(error))
    finally:
        release.set()
        app.close()
    assert outcomes.count("done") == 2  # one running, one waiting: the queue's bound
    assert all("queue is full" in o.lower() for o in outcomes if o != "done"), outcomes
