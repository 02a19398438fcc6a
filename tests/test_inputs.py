"""explain() takes images in every form users have them, and names the bad ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from epic_hf import EpicExplainer, UnreadableImageError
from epic_hf.images import pil_to_rgb
from tiny_models import make_tiny_model, tiny_processor


@pytest.fixture(scope="module")
def explainer():
    return EpicExplainer(make_tiny_model("resnet"), tiny_processor())


def _modes() -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    deep = Image.fromarray(rng.integers(0, 65536, (30, 40), dtype=np.uint16).astype(np.uint16))
    return {
        "L": rgb.convert("L"),
        "LA": rgb.convert("LA"),
        "RGBA": rgb.convert("RGBA"),
        "P": rgb.convert("P"),
        "CMYK": rgb.convert("CMYK"),
        "I;16": deep if deep.mode == "I;16" else deep.convert("I;16"),
        "I": rgb.convert("I"),
        "F": rgb.convert("F"),
        "1": rgb.convert("1"),
    }


@pytest.mark.parametrize("mode", list(_modes()))
def test_every_pil_mode_becomes_rgb(explainer, mode):
    image = _modes()[mode]
    assert image.mode == mode
    converted = pil_to_rgb(image)
    assert converted.mode == "RGB" and converted.size == image.size
    explanation = explainer.explain(image)
    assert explanation.logits.shape == (3,)


def test_sixteen_bit_images_are_rescaled_not_clipped():
    deep = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert np.asarray(pil_to_rgb(deep)).min() == 255
    half = Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16))
    assert np.asarray(pil_to_rgb(half)).max() == 128


def test_transparency_is_composited_on_white():
    clear = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert np.asarray(pil_to_rgb(clear)).min() == 255


def test_numpy_and_paths_give_the_same_explanation(explainer, tmp_path):
    array = np.random.default_rng(1).integers(0, 256, (36, 36, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "x.png")
    from_array = explainer.explain(array)
    from_path = explainer.explain(tmp_path / "x.png")
    from_str = explainer.explain(str(tmp_path / "x.png"))
    assert torch.equal(from_array.logits, from_path.logits) and torch.equal(from_path.logits, from_str.logits)
    grey = explainer.explain(array[:, :, 0])
    assert grey.logits.shape == (3,)


def test_a_list_returns_a_list_in_batches(explainer):
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(5)]
    batched = explainer.explain(images, batch_size=2)
    assert isinstance(batched, list) and len(batched) == 5
    for image, explanation in zip(images, batched):
        torch.testing.assert_close(explainer.explain(image).logits, explanation.logits)


def test_missing_file_is_named(explainer, tmp_path):
    with pytest.raises(ValueError, match=r"input 0: image file '.*nope.jpg' does not exist"):
        explainer.explain(tmp_path / "nope.jpg")


def test_unreadable_file_is_named_with_its_position(explainer, tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(UnreadableImageError, match=r"input 3: '.*bad.jpg' is not a readable image") as raised:
        explainer.explain([good, good, good, bad], batch_size=2)
    assert raised.value.position == 3 and raised.value.reason.startswith(f"{str(bad)!r} is not a readable image")


def _bomb(path):
    """A valid PNG whose header claims more pixels than PIL decodes by default (over twice its bomb limit)."""
    import struct
    import zlib

    side = 20000

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))
    return path


def test_an_image_over_the_decompression_limit_is_an_unreadable_one(explainer, tmp_path):
    bomb = _bomb(tmp_path / "huge.png")
    with pytest.raises(UnreadableImageError, match=r"input 0: '.*huge.png' is too large to decode safely"):
        explainer.explain(bomb)


def test_a_fit_skips_a_decompression_bomb_and_names_it(tmp_path):
    import datasets

    from epic_hf.synthetic import planted_dataset, tiny_resnet

    data = planted_dataset(12, num_classes=3, size=32, seed=0).cast_column("image", datasets.Image(decode=False))
    records = data.to_dict()
    records["image"][5] = {"bytes": None, "path": str(_bomb(tmp_path / "huge.png"))}
    hostile = datasets.Dataset.from_dict(records, features=data.features).cast_column("image", datasets.Image())
    model, processor = tiny_resnet(3, (8, 8), seed=1)
    explainer = EpicExplainer(model, processor)
    report = explainer.fit(hostile, prototypes_per_channel=2, schedule_start=4, schedule_end=2, schedule_steps=1)
    assert report.skipped_keys == [5] and report.num_samples == 11
    assert 5 not in explainer.bank.sample_keys.reshape(-1).tolist()


@pytest.mark.parametrize(
    "array,message",
    [
        (np.zeros((3, 32, 32), dtype=np.uint8), r"shape \(3, 32, 32\).*transpose"),
        (np.zeros((32, 32, 3), dtype=np.float32), "must be uint8.*float32"),
        (np.zeros((2, 32, 32, 3), dtype=np.uint8), r"shape \(2, 32, 32, 3\)"),
    ],
)
def test_bad_arrays_are_refused(explainer, array, message):
    with pytest.raises(ValueError, match="input 0: numpy images .*" + message):
        explainer.explain(array)


def test_unknown_input_type_is_refused(explainer):
    with pytest.raises(ValueError, match="input 0: expected a PIL image.*got int"):
        explainer.explain([42])


def test_top_k_must_be_positive(explainer):
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        explainer.explain(np.zeros((8, 8, 3), dtype=np.uint8), top_k=0)


def _model_with_its_own_code(tmp_path):
    """(a model folder whose config needs its own code, the file that code creates when it runs)."""
    import json

    folder = tmp_path / "custom"
    folder.mkdir()
    marker = tmp_path / "foreign-code-ran"
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil_classifier", "auto_map": {"AutoConfig": "configuration_evil.EvilConfig"}}))
    (folder / "configuration_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import PretrainedConfig\n\n\nclass EvilConfig(PretrainedConfig):\n"
        "    model_type = 'evil_classifier'\n")
    return folder, marker


def test_a_model_that_asks_to_run_its_own_code_is_refused_and_nothing_runs(tmp_path):
    """A config whose model type only its own code knows: transformers is told trust_remote_code=False."""

    from epic_hf import UnsupportedModelError

    folder, marker = _model_with_its_own_code(tmp_path)
    with pytest.raises(UnsupportedModelError, match="never runs foreign code.*trust_remote_code=True"):
        EpicExplainer.from_pretrained(folder)
    assert not marker.exists()


@pytest.mark.slow
def test_the_command_answers_no_prompt_and_runs_foreign_code_only_when_told(tmp_path):
    """The reported attack: `echo y | epic-hf explain ...` must not answer transformers' prompt and run the code."""
    import subprocess
    import sys

    from PIL import Image
    from test_cli import ROOT, subprocess_env

    folder, marker = _model_with_its_own_code(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "probe.png")

    def explain(*flags: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "epic_hf", "explain", str(folder), str(tmp_path / "probe.png"),
                               *flags], input="y\ny\n", capture_output=True, text=True, env=subprocess_env(),
                              cwd=ROOT, timeout=180)

    refused = explain()
    assert refused.returncode == 1 and not marker.exists()
    assert "Traceback" not in refused.stderr and "--trust-remote-code" in refused.stderr.splitlines()[-1]
    explain("--trust-remote-code")  # it fails later (the repo has no model), but only after running its code
    assert marker.exists()
