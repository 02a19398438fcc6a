"""The Gradio app: served on loopback in this process, driven by the real gradio_client and a real Chromium.

The bank is fit on the planted-concept data in a few seconds; nothing is mocked: gradio serves its
real page, ``gradio_client`` uploads real files through its API, Chromium uploads through the
page's own file input (tests/cdp.py).
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import zlib
from pathlib import Path

import pytest

from epic_hf.app import OFFLINE_ENVIRONMENT, AppUnavailableError, import_gradio, offline_theme

try:  # as the app imports it: the offline environment is in place before gradio reads it
    gradio = import_gradio()
except AppUnavailableError:
    if os.environ.get("CI"):  # CI installs the app extra: there a missing gradio fails
        raise
    pytest.skip("gradio is not installed (the app extra)", allow_module_level=True)
from gradio_client import Client, handle_file  # noqa: E402

from epic_hf import EpicExplainer  # noqa: E402
from epic_hf.app.views import PREDICTED, BadUploadError, decomposition_markdown, read_upload  # noqa: E402
from epic_hf.synthetic import planted_dataset, tiny_resnet, train_classifier  # noqa: E402
from epic_hf.viz.captions import signed  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIT = dict(prototypes_per_channel=3, schedule_start=6, schedule_end=3, schedule_steps=1, lr=1e-2)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def explainer() -> EpicExplainer:
    data = planted_dataset(40, num_classes=3, size=32, seed=4)
    model, processor = tiny_resnet(3, (8, 8), seed=2)
    train_classifier(model, processor, data, epochs=2)
    explainer = EpicExplainer(model, processor)
    explainer.fit(data, **FIT)
    return explainer


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    held_out = planted_dataset(3, num_classes=3, size=32, seed=9)["image"]
    paths = {f"image{i}": folder / f"image{i}.png" for i in range(3)}
    for image, path in zip(held_out, paths.values()):
        image.save(path)
    (folder / "notes.png").write_text("not an image at all")
    png = paths["image0"].read_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "huge.png").write_bytes(huge_png())
    paths.update(notes=folder / "notes.png", truncated=folder / "truncated.png", huge=folder / "huge.png")
    return paths


def huge_png(width: int = 12000, height: int = 12000) -> bytes:
    """A small file whose header says 144 megapixels: what a decompression bomb looks like to a reader."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = zlib.compress(b"\x00" * (width * 3 + 1) * 16)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def served(explainer):
    blocks = explainer.launch(host="127.0.0.1", port=free_port(), block=False)
    try:
        yield blocks
    finally:
        blocks.close()


@pytest.fixture(scope="module")
def client(served) -> Client:
    return Client(served.local_url, verbose=False)


# -- views, without a server ---------------------------------------------------------------------
def test_bad_uploads_are_refused_with_a_reason(images):
    for name, reason in (("notes", "not an image"), ("truncated", "damaged or truncated"), ("huge", "megapixels")):
        with pytest.raises(BadUploadError, match=reason):
            read_upload({"path": str(images[name])})
    with pytest.raises(BadUploadError, match="no image"):
        read_upload(None)
    assert read_upload({"path": str(images["image0"])}).mode == "RGB"


def test_the_decomposition_table_adds_up_to_the_logit(explainer, images):
    explanation = explainer.explain(str(images["image0"]), top_k=3)
    text = decomposition_markdown(explanation)
    total = float(explanation.contributions.double().sum()) + explanation.cls_contribution + explanation.bias
    assert total == pytest.approx(explanation.target_logit, abs=1e-4)
    assert f"**{signed(explanation.target_logit)}**" in text and signed(explanation.bias) in text
    assert "the other" in text  # the coverage line says what the channels not shown add


def test_the_app_keeps_only_its_newest_pictures_and_removes_its_folder(explainer, tmp_path):
    from PIL import Image

    from epic_hf.app import build_app
    from epic_hf.app.views import picture_file

    written = [picture_file(Image.new("RGB", (8, 8), (i, 0, 0)), tmp_path, keep=5) for i in range(12)]
    assert sorted(str(p) for p in tmp_path.glob("*.jpg")) == written[-5:]  # the newest five, the last one too
    blocks = build_app(explainer)
    work = Path(blocks.epic_examples_dir)
    assert any(work.rglob("*.jpg"))  # the bank's prototype images, as examples
    blocks.epic_remove_files()
    assert not work.exists()  # the process's exit does the same (test_the_command_serves_a_demo_bank_offline)


def test_the_app_is_set_up_to_work_offline(explainer):
    theme = offline_theme(gradio)
    assert all(not isinstance(font, gradio.themes.GoogleFont) for font in theme._font + theme._font_mono)
    assert "googleapis" not in theme._get_theme_css()
    assert set(OFFLINE_ENVIRONMENT) == {"GRADIO_ANALYTICS_ENABLED", "HF_HUB_DISABLE_TELEMETRY"}
    assert gradio.analytics.analytics_enabled() is False  # gradio itself reads the setting as off
    # huggingface_hub's own truth values; gradio writes "True" here itself once analytics are off
    assert os.environ["HF_HUB_DISABLE_TELEMETRY"].upper() in {"1", "ON", "YES", "TRUE"}


def test_import_gradio_keeps_what_the_user_set(monkeypatch):
    monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "0")
    import_gradio()
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"  # unset: the offline value
    assert os.environ["HF_HUB_DISABLE_TELEMETRY"] == "0"  # set by the user: left alone


def test_without_gradio_the_command_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    from epic_hf.cli import main

    monkeypatch.setitem(sys.modules, "gradio", None)
    assert main(["app", str(tmp_path)]) == 1
    error = capsys.readouterr().err.strip()
    assert error == 'epic-hf: error: the app needs gradio: pip install "epic_hf[app]"'


# -- the served app, through gradio_client -------------------------------------------------------
@pytest.mark.slow
def test_the_client_explains_an_image_exactly(explainer, client, images):
    label, text, sheet, channels = client.predict(handle_file(str(images["image1"])), PREDICTED, 3,
                                                  api_name="/explain")
    expected = explainer.explain(str(images["image1"]), top_k=3)
    assert label["label"] == expected.target_label
    assert f"**{signed(expected.target_logit)}**" in text
    assert [c[1] for c in channels["choices"]] == [c.channel for c in expected.channels]
    from PIL import Image
    assert Image.open(sheet).size == expected.to_image().size


@pytest.mark.slow
def test_the_overlay_box_lays_the_pixel_map_over_the_input(explainer, client, images):
    import numpy as np
    from PIL import Image

    from epic_hf.viz import layout_for

    *_, plain, _ = client.predict(handle_file(str(images["image1"])), PREDICTED, 3, False, api_name="/explain")
    *_, heat, _ = client.predict(handle_file(str(images["image1"])), PREDICTED, 3, True, api_name="/explain")
    expected = explainer.explain(str(images["image1"]), top_k=3)
    x0, y0, x1, y1 = layout_for(expected).main_cell

    def main_cell(picture) -> np.ndarray:
        return np.asarray(picture.convert("RGB"), float)[y0:y1, x0:x1]

    served = main_cell(Image.open(heat))  # a JPEG: near the sheet drawn here, far from the plain one
    assert np.abs(served - main_cell(expected.to_image(overlay="shown"))).mean() < 3
    assert np.abs(served - main_cell(Image.open(plain))).mean() > 10


@pytest.mark.slow
def test_the_client_asks_why_another_class(explainer, client, images):
    other = (explainer.explain(str(images["image1"])).target_index + 1) % 3
    _, text, _, _ = client.predict(handle_file(str(images["image1"])), f"{other}: {explainer.id2label[other]}", 2,
                                   api_name="/explain")
    expected = explainer.explain(str(images["image1"]), target=other, top_k=2)
    assert f"(class {other})" in text and f"**{signed(expected.target_logit)}**" in text


@pytest.mark.slow
def test_a_bad_upload_gets_a_message_and_the_app_keeps_serving(client, images):
    from gradio_client.exceptions import AppError

    for name, reason in (("notes", "not an image"), ("truncated", "truncated"), ("huge", "megapixels")):
        with pytest.raises(AppError, match=reason):
            client.predict(handle_file(str(images[name])), PREDICTED, 3, api_name="/explain")
    label, *_ = client.predict(handle_file(str(images["image2"])), PREDICTED, 3, api_name="/explain")
    assert label["label"]


@pytest.mark.slow
def test_the_channel_and_class_views(explainer, client):
    bank = explainer.bank
    sheet, text = client.predict(1, api_name="/channel")
    assert Path(sheet).is_file() and "channel 1" in text
    index = int(bank.class_counts.argmax())
    text, gallery = client.predict(f"{index}: {explainer.id2label[index]}", api_name="/class")
    top = [c for c, v in bank.class_channels(index, 4) if v > 0]
    assert [item["caption"] for item in gallery] == [f"channel {c}" for c in top]
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError, match="greater than maximum"):  # gradio checks the number against the bank
        client.predict(10_000, api_name="/channel")


# -- the real page, in headless Chromium ---------------------------------------------------------
@pytest.mark.slow  # a Chromium start and one explanation through the page: about 10 s
def test_the_page_explains_an_upload_in_chromium_and_loads_nothing_from_outside(explainer, served, images,
                                                                                 tmp_path):
    """Upload through the page's own file input, click Explain, read the page, take a screenshot.

    The screenshot goes to ``tmp_path``: the suite writes only into temporary folders (the README's
    picture, docs/images/app.png, is made from the demo's trained model by scripts/app_screenshot.py).
    """
    from cdp import Browser, explain_upload, page_screenshot

    expected = explainer.explain(str(images["image0"]), top_k=4)
    browser = Browser(tmp_path)
    try:
        text = explain_upload(browser, served.local_url, images["image0"])
        assert signed(expected.target_logit) in text and "exact decomposition" in text
        assert expected.target_label in browser.evaluate("document.querySelector('#prediction').innerText")
        natural = browser.evaluate("[document.querySelector('#sheet img').naturalWidth,"
                                   " document.querySelector('#sheet img').naturalHeight]")
        assert natural == list(expected.to_image().size)
        shot = page_screenshot(browser)
        assert shot.startswith(b"\x89PNG") and len(shot) > 10_000
        (tmp_path / "app.png").write_bytes(shot)
        urls = [e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"]
    finally:
        browser.close()
    outside = [u for u in urls if not u.startswith((served.local_url.rstrip("/"), "data:", "blob:"))]
    assert urls and not outside, outside  # offline: no CDN font, script or analytics request


# -- the command, as a user runs it --------------------------------------------------------------
@pytest.mark.slow  # a small demo, then a fresh Python that imports torch and gradio: about 20 s
def test_the_command_serves_a_demo_bank_offline(tmp_path):
    """``epic-hf app <demo bank>`` in its own process, with the Hub marked offline: the page answers and explains."""
    import signal
    import subprocess

    from served import wait_for_client

    from epic_hf.demo import run_demo

    summary = run_demo(tmp_path / "demo", num_images=24, num_explained=1, classifier_epochs=1, num_held_out=4)
    port = free_port()
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1",
           "TMPDIR": str(temporary), "GRADIO_TEMP_DIR": str(temporary / "gradio")}
    env.pop("GRADIO_ANALYTICS_ENABLED", None)  # the command sets it itself
    script = Path(sys.executable).with_name("epic-hf")  # the console script pip installed beside this Python
    launcher = [str(script)] if script.is_file() else [sys.executable, "-m", "epic_hf"]
    command = [*launcher, "app", summary["bank_dir"], "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = wait_for_client(process, f"http://127.0.0.1:{port}/", 120)
        image = tmp_path / "query.png"
        planted_dataset(1, num_classes=4, size=64, seed=13)["image"][0].save(image)
        label, text, sheet, _ = client.predict(handle_file(str(image)), PREDICTED, 3, api_name="/explain")
        expected = EpicExplainer.from_pretrained(summary["bank_dir"]).explain(str(image), top_k=3)
        assert label["label"] == expected.target_label and f"**{signed(expected.target_logit)}**" in text
        assert Path(sheet).is_file()
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C, as a user stops it
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0 and "Traceback" not in output, output
    assert not list(temporary.glob("epic_hf_app_*")), "the app left its folder behind"
