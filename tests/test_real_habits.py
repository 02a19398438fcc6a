"""Real files and real habits, each reproduced as a user hits it (issue: real data and real habits).

Phone photos with an EXIF orientation, banks moved with their classifier, relative paths from
another working directory, a folder holding a truncated JPEG, no network, and U's exactness.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import constants
from PIL import Image, ImageOps

from epic_hf import BankMismatchError, BaseModelNotFoundError, EpicExplainer, HubUnreachableError, PrototypeBank
from epic_hf.cli import main
from epic_hf.data import open_source
from epic_hf.fit.trainer import bound_condition
from epic_hf.synthetic import planted_dataset, tiny_resnet

FIT = dict(schedule_start=6, schedule_end=3, schedule_steps=2, prototypes_per_channel=3, batch_size=32)


def upright_picture(size: tuple[int, int] = (48, 32)) -> Image.Image:
    """An asymmetric picture: a red block top-left on a blue-green gradient."""
    width, height = size
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[..., 1] = np.linspace(0, 200, width, dtype=np.uint8)[None, :]
    array[..., 2] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    array[: height // 3, : width // 3] = (230, 20, 20)
    return Image.fromarray(array)


def save_sideways_jpeg(path: Path) -> Image.Image:
    """What a phone writes: pixels stored rotated, with EXIF orientation 6 saying how to show them."""
    upright = upright_picture()
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # orientation 6 displays it rotated back
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, format="JPEG", quality=95, exif=exif)
    return upright


def run_cli(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    previous = Path.cwd()
    os.chdir(cwd or previous)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(previous)
    return code, out.getvalue(), err.getvalue()


def make_project(project: Path, num_images: int = 40) -> None:
    """A classifier folder and a fitted bank beside it that names it."""
    model, processor = tiny_resnet(4, (8, 8), seed=3)
    model.save_pretrained(project / "classifier")
    processor.save_pretrained(project / "classifier")
    explainer = EpicExplainer.from_pretrained(project / "classifier")
    explainer.fit(planted_dataset(num_images, num_classes=4, size=32, seed=0), **FIT)
    explainer.save_pretrained(project / "bank")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A project folder: a classifier, a fitted bank naming it, and a few images."""
    root = tmp_path_factory.mktemp("habits")
    make_project(root / "project")
    images = root / "images"
    images.mkdir()
    for index, image in enumerate(planted_dataset(3, num_classes=4, size=32, seed=9)["image"]):
        image.save(images / f"img{index}.png")
    return root


# -- phone photos -----------------------------------------------------------------------------
def test_exif_orientation_is_honoured_in_explain(workspace, tmp_path):
    path = tmp_path / "phone.jpg"
    save_sideways_jpeg(path)
    explainer = EpicExplainer.from_pretrained(workspace / "project" / "bank")
    with Image.open(path) as opened:
        stored = Image.fromarray(np.asarray(opened.convert("RGB")))  # the pixels as stored: sideways, no tag
        upright = ImageOps.exif_transpose(opened).convert("RGB")
    assert stored.size == (32, 48) and upright.size == (48, 32)
    from_path = explainer.explain(str(path))
    torch.testing.assert_close(from_path.logits, explainer.explain(upright).logits)
    assert not torch.allclose(from_path.logits, explainer.explain(stored).logits, atol=1e-4)
    with Image.open(path) as opened:  # a PIL image handed in with its EXIF tag is turned upright too
        torch.testing.assert_close(explainer.explain(opened).logits, from_path.logits)


def test_exif_orientation_is_honoured_in_fit_data(tmp_path):
    folder = tmp_path / "photos" / "things"
    folder.mkdir(parents=True)
    save_sideways_jpeg(folder / "phone.jpg")
    source = open_source(str(tmp_path / "photos"))
    (key, image, name), = list(source.iter_named_images([0]))
    assert image.size == (48, 32) and name.startswith("phone.jpg")
    assert image.getpixel((2, 2))[0] > 180  # the red block is top-left once upright


# -- moved banks, relative paths ---------------------------------------------------------------
def test_bank_and_classifier_moved_together(workspace, tmp_path):
    moved = tmp_path / "moved"
    make_project(tmp_path / "original", num_images=20)
    before = EpicExplainer.from_pretrained(tmp_path / "original" / "bank").explain(str(workspace / "images" / "img0.png"))
    shutil.move(tmp_path / "original", moved)
    with pytest.raises(BaseModelNotFoundError, match="base_model=") as refused:
        EpicExplainer.from_pretrained(moved / "bank")
    assert str(tmp_path / "original" / "classifier") in str(refused.value)
    explainer = EpicExplainer.from_pretrained(moved / "bank", base_model=moved / "classifier")
    after = explainer.explain(str(workspace / "images" / "img0.png"))
    torch.testing.assert_close(after.logits, before.logits)
    assert [c.channel for c in after.channels] == [c.channel for c in before.channels]
    code, out, err = run_cli("explain", str(moved / "bank"), str(workspace / "images" / "img0.png"),
                             "--base-model", str(moved / "classifier"))
    assert code == 0 and "top channels" in out, err
    code, _, err = run_cli("explain", str(moved / "bank"), str(workspace / "images" / "img0.png"))
    assert code == 1 and "--base-model" in err.strip().splitlines()[-1]


def test_a_different_classifier_given_as_base_model_is_refused(workspace, tmp_path):
    other_model, processor = tiny_resnet(4, (8, 8), seed=4)
    other_model.save_pretrained(tmp_path / "other")
    processor.save_pretrained(tmp_path / "other")
    with pytest.raises(BankMismatchError, match="fingerprints differ"):
        EpicExplainer.from_pretrained(workspace / "project" / "bank", base_model=tmp_path / "other")


def test_relative_paths_work_from_another_directory(workspace, tmp_path):
    previous = Path.cwd()
    os.chdir(workspace / "project")
    try:
        explainer = EpicExplainer.from_pretrained("classifier")  # relative, as typed
        assert explainer.base_model_name_or_path == str((workspace / "project" / "classifier").resolve())
        explainer.fit(planted_dataset(20, num_classes=4, size=32, seed=1), **FIT)
        explainer.save_pretrained(tmp_path / "relative-bank")
        os.chdir(tmp_path)
        reloaded = EpicExplainer.from_pretrained("relative-bank")
        assert reloaded.bank is not None
        for spelling in ("./classifier", str(workspace / "project" / "classifier") + "/"):
            os.chdir(workspace / "project")
            same = EpicExplainer.from_pretrained(spelling)
            same.set_bank(reloaded.bank)  # the same folder under another spelling is the same model
    finally:
        os.chdir(previous)


# -- folders with a bad file ---------------------------------------------------------------------
def test_explain_a_folder_with_one_truncated_jpeg(workspace, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(workspace / "images", folder)
    upright_picture().save(folder / "broken.jpg", format="JPEG")
    (folder / "broken.jpg").write_bytes((folder / "broken.jpg").read_bytes()[:200])
    code, out, err = run_cli("explain", str(workspace / "project" / "bank"), str(folder), "-o", str(tmp_path / "out"))
    assert code == 0, err
    assert out.count("top channels") == 3
    assert "broken.jpg" in err and "skipping" in err
    assert "broken.jpg" in (tmp_path / "out" / "report.html").read_text()
    code, _, err = run_cli("explain", str(workspace / "project" / "bank"), str(folder), "--strict")
    assert code == 1 and "broken.jpg" in err


def test_output_is_checked_before_the_model_loads(workspace, tmp_path):
    code, _, err = run_cli("explain", str(tmp_path / "no-such-bank"), str(workspace / "images" / "img0.png"),
                           "-o", str(tmp_path / "r.gif"))
    # the bank does not exist either: had anything been loaded first, that would be the error
    assert code == 1 and "r.gif" in err and "no-such-bank" not in err


# -- no network --------------------------------------------------------------------------------
def test_an_unreachable_hub_fails_fast_and_says_what_to_do(monkeypatch, workspace, caplog):
    with socket_closed_port() as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        with caplog.at_level(logging.WARNING, logger="epic_hf"), \
                pytest.raises(HubUnreachableError, match="HF_HUB_OFFLINE=1"):
            EpicExplainer.from_pretrained("acme/resnet-nowhere")
        # fast: one probe found the endpoint dead, and loading went to the local cache alone (no retries)
        assert [r.getMessage() for r in caplog.records if "local cache only" in r.getMessage()] == [
            f"cannot reach the Hugging Face Hub at {endpoint}: using the local cache only"]
        code, _, err = run_cli("explain", "acme/resnet-nowhere", str(workspace / "images" / "img0.png"))
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("epic-hf: error: cannot reach the Hugging Face Hub")


@contextlib.contextmanager
def socket_closed_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    yield f"http://127.0.0.1:{port}"  # nothing listens there any more


# -- what an explanation shows --------------------------------------------------------------------
def test_shown_channels_are_concepts_the_image_has(workspace):
    explainer = EpicExplainer.from_pretrained(workspace / "project" / "bank")
    generator = torch.Generator().manual_seed(0)
    S = torch.randn(explainer.num_channels, explainer.num_channels, generator=generator) * 0.3
    explainer.set_bank(dataclasses.replace(explainer.bank, S=S, matrix="orthogonal", base=None))
    assert (explainer.U - torch.eye(explainer.num_channels)).abs().max() > 0.1  # a U far from I
    images = [Image.open(p).convert("RGB") for p in sorted((workspace / "images").iterdir())]
    with torch.no_grad():  # the model's own forward, run here on its own
        own = explainer.model(pixel_values=explainer.preprocess(images)).logits
    for explanation, image, logits in zip(explainer.explain(images, top_k=8), images, own):
        pooled = explainer.feature_map(image).mean(dim=(2, 3))[0]
        evidence = [c.evidence for c in explanation.channels]
        assert evidence == sorted(evidence, reverse=True)
        for channel in explanation.channels:
            assert pooled[channel.channel] > 0 and channel.evidence > 0
        total = explanation.contributions.sum() + explanation.cls_contribution + explanation.bias
        assert float(total) == pytest.approx(float(logits[explanation.target_index]), abs=1e-5)


def test_a_badly_conditioned_bank_is_refused(workspace):
    explainer = EpicExplainer.from_pretrained(workspace / "project" / "bank")
    bank = explainer.bank
    dim = bank.num_channels
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(0)))
    S = rotation @ torch.diag(torch.linspace(-14, 14, dim)) @ rotation.T  # cond(exp(S)) = e^28, not diagonal
    bad = PrototypeBank(**{**{k: getattr(bank, k) for k in bank.__dataclass_fields__}, "S": S, "matrix": "invertible",
                           "base": None})
    with pytest.raises(BankMismatchError, match="tolerance"):
        explainer.set_bank(bad)


def test_invertible_fits_keep_the_condition_number_bounded():
    S = torch.diag(torch.linspace(-10, 10, 6))
    assert bound_condition(S, 1e4)
    assert float(torch.linalg.cond(torch.linalg.matrix_exp(S.double()))) <= 1e4 * (1 + 1e-6)
    assert not bound_condition(S, 1e4)  # already within the bound: left alone
    data = planted_dataset(40, num_classes=4, size=32, seed=0)
    model, processor = tiny_resnet(4, (8, 8), seed=3)
    explainer = EpicExplainer(model, processor, matrix="invertible")
    report = explainer.fit(data, **{**FIT, "lr": 0.5, "max_condition": 50.0})
    assert report.condition_number is not None and 1.0 <= report.condition_number <= 50.0
    assert explainer.bank.config.condition_number == pytest.approx(report.condition_number)


# -- the card, the curve, the class evidence, the atlas ------------------------------------------
def test_fit_output_dir_has_the_purity_curve_and_the_card_its_table(tmp_path):
    data = planted_dataset(40, num_classes=4, size=32, seed=0)
    model, processor = tiny_resnet(4, (8, 8), seed=3)
    explainer = EpicExplainer(model, processor)
    report = explainer.fit(data, output_dir=tmp_path / "run", **FIT)
    with Image.open(tmp_path / "run" / "purity.png") as curve:
        assert curve.size == (640, 380)
    card = (tmp_path / "run" / "bank" / "README.md").read_text()
    assert "Purity per schedule step" in card
    assert f"{report.steps[0].purity_after:.4f}" in card
    assert all(s.purity_before == s.purity_before and s.purity_after == s.purity_after for s in report.steps)


def test_class_evidence_is_the_mean_contribution_over_predicted_samples(workspace):
    explainer = EpicExplainer.from_pretrained(workspace / "project" / "bank")
    bank = explainer.bank
    data = planted_dataset(40, num_classes=4, size=32, seed=0)
    explanations = explainer.explain(list(data["image"]), top_k=1)
    for label in range(4):
        mine = [e.contributions for e in explanations if e.target_index == label]
        assert int(bank.class_counts[label]) == len(mine)
        if mine:
            torch.testing.assert_close(bank.class_evidence[label], torch.stack(mine).float().mean(0),
                                       rtol=1e-4, atol=1e-5)
            top = explainer.class_channels(label, top_k=3)
            assert [c for c, _ in top] == bank.class_evidence[label].topk(3).indices.tolist()
            assert explainer.class_channels(explainer.id2label[label], 3) == top


def test_atlas_command_writes_a_site(workspace, tmp_path):
    code, out, err = run_cli("atlas", str(workspace / "project" / "bank"), "-o", str(tmp_path / "atlas"))
    assert code == 0, err
    assert (tmp_path / "atlas" / "index.html").is_file()
    assert len(list((tmp_path / "atlas" / "images").iterdir())) == len(
        PrototypeBank.from_pretrained(workspace / "project" / "bank").thumbnails)


def test_the_explained_image_is_marked_among_its_own_prototypes(workspace):
    explainer = EpicExplainer.from_pretrained(workspace / "project" / "bank")
    data = planted_dataset(40, num_classes=4, size=32, seed=0)  # the bank's own training data
    marked = 0
    for index, explanation in enumerate(explainer.explain(list(data["image"]), top_k=8)):
        for channel in explanation.channels:
            for prototype in channel.prototypes:
                assert prototype.is_query == (prototype.sample_key == index)
                marked += prototype.is_query
    assert marked > 0
    names = explainer.bank.sample_names
    labels = data.features["label"].names
    assert names and all(name == f"{labels[data[key]['label']]} #{key}" for key, name in names.items())


def test_reprs_are_short(workspace):
    explainer = EpicExplainer.from_pretrained(workspace / "project" / "bank")
    explanation = explainer.explain(str(workspace / "images" / "img0.png"))
    for text in (repr(explainer.bank), repr(explainer), repr(explanation)):
        assert len(text) < 400, text
    assert "8 channels x 3 prototypes" in repr(explainer.bank) and "purity" in repr(explainer.bank)


def test_a_fit_resumes_whatever_the_spelling_of_its_image_folder(workspace, tmp_path):
    folder = tmp_path / "photos" / "shapes"
    folder.mkdir(parents=True)
    for index, image in enumerate(planted_dataset(12, num_classes=4, size=32, seed=2)["image"]):
        image.save(folder / f"{index}.png")
    explainer = EpicExplainer.from_pretrained(workspace / "project" / "classifier")
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        first = explainer.fit("./photos", output_dir="run", **FIT)
        again = explainer.fit(str(tmp_path / "photos") + "/", output_dir=tmp_path / "run", **FIT)
    finally:
        os.chdir(previous)
    assert again.total_seconds == first.total_seconds  # the finished fit was loaded, not redone
