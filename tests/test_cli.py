"""The `epic-hf` command on tiny models: in-process through `main([...])`, and as users run it,
`python -m epic_hf ...` in a subprocess (those tests are marked slow)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from epic_hf.cli import main

from tiny_models import save_tiny_model

ROOT = Path(__file__).resolve().parent.parent
FIT_FLAGS = ["--schedule-start", "6", "--schedule-end", "2", "--schedule-steps", "2", "--prototypes-per-channel", "2",
             "--batch-size", "16"]


def make_image_folder(directory: Path, num_images: int = 40) -> Path:
    """`planted_dataset` saved as PNG files in one subfolder per class (an `imagefolder`)."""
    from epic_hf.synthetic import planted_dataset

    dataset = planted_dataset(num_images, size=32)
    names = dataset.features["label"].names
    for index, example in enumerate(dataset):
        folder = directory / names[example["label"]].replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        example["image"].save(folder / f"{index:03d}.png")
    return directory


def subprocess_env(offline: bool = True) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
        env["HF_DATASETS_OFFLINE"] = "1"
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def epic_hf(*args: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``main([...])`` in this process, capturing what it prints, as a CompletedProcess."""
    out, err = io.StringIO(), io.StringIO()
    previous = Path.cwd()
    os.chdir(cwd or ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exited:
                code = int(exited.code or 0)
    finally:
        os.chdir(previous)
    completed = subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"epic-hf {args} exited {code}:\n{completed.stdout[-3000:]}\n{completed.stderr[-5000:]}")
    return completed


def epic_hf_subprocess(*args: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "epic_hf", *args]
    completed = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), cwd=cwd or ROOT,
                               timeout=180)
    if check and completed.returncode != 0:
        raise AssertionError(f"{command} exited {completed.returncode}:\n{completed.stdout[-3000:]}\n"
                             f"{completed.stderr[-5000:]}")
    return completed


def assert_one_line_error(completed: subprocess.CompletedProcess, *needles: str) -> str:
    assert completed.returncode != 0
    assert "Traceback" not in completed.stderr, completed.stderr
    errors = [line for line in completed.stderr.splitlines() if line.startswith("epic-hf: error:")]
    assert len(errors) == 1, completed.stderr
    assert completed.stderr.rstrip().endswith(errors[0]), completed.stderr  # the last thing printed
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    save_tiny_model("resnet", root / "model")
    make_image_folder(root / "images")
    return root


@pytest.fixture(scope="module")
def fitted(assets: Path) -> Path:
    output = assets / "run"
    completed = epic_hf("fit", str(assets / "model"), str(assets / "images"), "--output-dir", str(output), *FIT_FLAGS)
    summary = json.loads(completed.stdout)
    assert summary["num_samples"] == 40
    assert 0.0 < summary["purity_after"] <= 1.0
    return output


def test_fit_writes_a_bank_that_loads(fitted: Path, assets: Path):
    from epic_hf import EpicExplainer

    explainer = EpicExplainer.from_pretrained(fitted / "bank")
    assert explainer.bank is not None
    assert explainer.bank.prototypes_per_channel == 2
    assert explainer.base_model_name_or_path == str((assets / "model").resolve())
    assert (fitted / "fit_report.json").is_file()


def test_fit_again_resumes_the_finished_run(fitted: Path, assets: Path):
    completed = epic_hf("fit", str(assets / "model"), str(assets / "images"), "--output-dir", str(fitted),
                        *FIT_FLAGS)
    assert "finished fit" in completed.stderr
    assert json.loads(completed.stdout)["bank"] == str(fitted / "bank")


def test_explain_writes_png_html_and_json(fitted: Path, assets: Path, tmp_path: Path):
    images = sorted((assets / "images").rglob("*.png"))[:2]
    out = tmp_path / "out"
    completed = epic_hf("explain", str(fitted), *map(str, images), "--top-k", "2", "--output", str(out))
    assert completed.stdout.count("top channels") == 2
    pictures = sorted(p.name for p in out.glob("*.png"))
    assert pictures == sorted(p.stem + ".png" for p in images)
    assert "<html" in (out / "report.html").read_text().lower()
    records = json.loads((out / "explanations.json").read_text())
    assert len(records) == 2 and len(records[0]["channels"]) == 2
    for record in records:  # exactness survives the trip through the CLI
        assert abs(sum(record["contributions"]) + record["bias"] - record["logit"]) < 1e-4
        assert len(record["channels"][0]["prototypes"]) == 2

    from PIL import Image

    single = epic_hf("explain", str(fitted / "bank"), str(images[0]), "--target", "1", "-o", str(tmp_path / "one.png"))
    assert "class 1" in single.stdout
    with Image.open(tmp_path / "one.png") as picture:
        assert picture.size[0] > 32


def test_output_kinds_by_suffix(fitted: Path, assets: Path, tmp_path: Path):
    """--output dispatch (in-process: the subprocess path is covered above)."""
    from epic_hf import EpicExplainer
    from epic_hf.cli.common import CliError
    from epic_hf.cli.explain import write_outputs

    images = sorted((assets / "images").rglob("*.png"))[:2]
    explanations = EpicExplainer.from_pretrained(fitted / "bank").explain([str(p) for p in images], top_k=2)
    assert write_outputs(explanations, images, tmp_path / "page.html", [])[0].stat().st_size > 1000
    write_outputs(explanations, images, tmp_path / "all.json", [])
    records = json.loads((tmp_path / "all.json").read_text())
    assert [r["image"] for r in records] == [str(p) for p in images]
    written = write_outputs(explanations, images, tmp_path / "pic.png", [])
    assert [p.name for p in written] == ["pic_0.png", "pic_1.png"]
    with pytest.raises(CliError, match="--output"):
        write_outputs(explanations, images, tmp_path / "x.txt", [])


def test_explain_a_plain_classifier_with_bank_flag(fitted: Path, assets: Path):
    image = sorted((assets / "images").rglob("*.png"))[0]
    completed = epic_hf("explain", str(assets / "model"), str(image), "--bank", str(fitted / "bank"))
    assert "top channels" in completed.stdout


def test_info_summarises_a_bank(fitted: Path, assets: Path):
    info = json.loads(epic_hf("info", str(fitted / "bank"), "--channel", "0").stdout)
    assert info["num_channels"] == 16 and info["prototypes_per_channel"] == 2
    assert info["model_type"] == "resnet"
    assert info["metrics"]["purity_after"] is not None
    assert info["bank_file_bytes"] > 0
    assert len(info["channel"]["prototypes"]) == 2
    from_run = json.loads(epic_hf("info", str(fitted)).stdout)  # a fit's output dir works too
    assert [step["prototypes"] for step in from_run["fit_report"]["steps"]] == [6, 4]


@pytest.mark.slow
def test_the_installed_command_runs():
    """``python -m epic_hf`` in a fresh process, not just ``main`` in this one (the flags: test_cli_polish.py)."""
    completed = epic_hf_subprocess("fit", "--help")
    assert completed.returncode == 0 and completed.stdout.startswith("usage: epic-hf fit")


def test_missing_image_file(fitted: Path, tmp_path: Path):
    completed = epic_hf("explain", str(fitted / "bank"), str(tmp_path / "nope.png"), check=False)
    assert_one_line_error(completed, "nope.png", "does not exist")


def test_unsupported_model(assets: Path, tmp_path: Path):
    from transformers import PerceiverConfig, PerceiverForImageClassificationLearned

    from tiny_models import tiny_processor

    perceiver = tmp_path / "perceiver"
    config = PerceiverConfig(num_latents=4, d_latents=16, d_model=16, num_blocks=1, num_self_attends_per_block=1,
                             num_self_attention_heads=1, num_cross_attention_heads=1, image_size=32, num_labels=3,
                             qk_channels=8, v_channels=16)
    PerceiverForImageClassificationLearned(config).save_pretrained(perceiver)
    tiny_processor().save_pretrained(perceiver)
    assert_one_line_error(epic_hf("fit", str(perceiver), str(assets / "images"), "--output-dir", str(tmp_path / "o"),
                                  check=False), "'perceiver'", "not supported", "latent")


def test_nonexistent_model_and_dataset(assets: Path, tmp_path: Path):
    image = sorted((assets / "images").rglob("*.png"))[0]
    assert_one_line_error(epic_hf("explain", str(tmp_path / "no-model"), str(image), check=False), "does not exist")
    assert_one_line_error(epic_hf("fit", str(assets / "model"), str(tmp_path / "no-data"), "--output-dir",
                                  str(tmp_path / "o"), check=False), "dataset", "does not exist")


def test_corrupt_bank(fitted: Path, tmp_path: Path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(fitted / "bank", broken)
    weights = broken / "epic_bank.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert_one_line_error(epic_hf("info", str(broken), check=False), "corrupt")
    assert_one_line_error(epic_hf("info", str(tmp_path), check=False), "not an EPIC bank")


@pytest.mark.slow
def test_debug_shows_the_traceback(fitted: Path, tmp_path: Path):
    completed = epic_hf_subprocess("explain", str(fitted / "bank"), str(tmp_path / "nope.png"), "--debug", check=False)
    assert completed.returncode != 0 and "Traceback" in completed.stderr


@pytest.mark.slow
def test_run_demo_small(tmp_path: Path):
    from epic_hf.demo import run_demo

    summary = run_demo(tmp_path / "demo", num_images=24, num_explained=2, classifier_epochs=1, num_held_out=8)
    assert Path(summary["report_html"]).is_file()
    records = json.loads(Path(summary["explanations_json"]).read_text())
    assert len(records) == 2 and 0.0 <= summary["held_out_accuracy"] <= 1.0
    for record, kind in zip(records, summary["explained"]):  # the true label is known and marked
        assert record["true_label"] in ("red circle", "green square", "blue triangle", "yellow cross")
        assert record["correct"] == (record["true_label"] == record["target_label"])
        assert ("miss" in kind) == (not record["correct"])
    html = Path(summary["report_html"]).read_text()
    assert html.count("MISS") + html.count("correct") >= 2
    assert all(Path(p).is_file() for p in summary["explanations"])
    from epic_hf import EpicExplainer

    explainer = EpicExplainer.from_pretrained(summary["bank_dir"])
    assert explainer.matrix == "invertible" and explainer.bank is not None


@pytest.mark.slow
def test_run_demo_with_a_vit(tmp_path: Path):
    """The demo's ViT: a CLS-token classifier whose bank explains with a CLS term and the patches' share."""
    from epic_hf import EpicExplainer
    from epic_hf.demo import run_demo

    summary = run_demo(tmp_path / "demo", num_images=24, num_explained=2, classifier_epochs=1, num_held_out=4,
                       architecture="vit")
    records = json.loads(Path(summary["explanations_json"]).read_text())
    assert all(record["cls_contribution"] != 0.0 and 0.0 < record["patch_share"] <= 1.0 for record in records)
    explainer = EpicExplainer.from_pretrained(summary["bank_dir"])
    assert explainer.model.config.model_type == "vit" and explainer.bank.config.patch_share is not None
    with pytest.raises(ValueError, match="architecture must be one of"):
        run_demo(tmp_path / "other", architecture="mlp")
