"""Every script in examples/ runs, offline, on a tiny model and a tiny image folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_cli import ROOT, make_image_folder, subprocess_env
from tiny_models import save_tiny_model

pytestmark = pytest.mark.slow  # subprocesses or the local Hub server

EXAMPLES = ROOT / "examples"
SHORT = ["--schedule-start", "6", "--schedule-end", "2", "--schedule-steps", "2", "--prototypes-per-channel", "2"]


def run(command: list[str], offline: bool = True) -> subprocess.CompletedProcess:
    completed = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(offline), cwd=ROOT,
                               timeout=240)
    if completed.returncode != 0:
        raise AssertionError(f"{command} exited {completed.returncode}:\n{completed.stdout[-3000:]}\n"
                             f"{completed.stderr[-5000:]}")
    return completed


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("examples")
    save_tiny_model("resnet", root / "model")
    make_image_folder(root / "images", num_images=24)
    return root


@pytest.fixture(scope="module")
def fitted(assets: Path) -> Path:
    output = assets / "imagefolder-run"
    completed = run([sys.executable, str(EXAMPLES / "fit_imagefolder.py"), str(assets / "model"),
                     str(assets / "images"), "--output-dir", str(output), *SHORT])
    assert "purity" in completed.stdout and "cond(U) = " in completed.stdout
    assert "relies most on" in completed.stdout
    assert (output / "bank" / "epic_config.json").is_file()
    assert (output / "example.png").is_file() and (output / "purity.png").is_file()
    return output


def test_every_example_is_tested():
    tested = {"explain_resnet50.py", "fit_imagefolder.py", "fit_streaming.py", "push_bank.py", "distributed_fit.sh"}
    in_process = {"audit_shortcut.py"}  # run in this process by tests/test_audit.py: no interpreter start to pay
    assert {p.name for p in EXAMPLES.iterdir() if p.suffix in (".py", ".sh")} == tested | in_process


def test_fit_imagefolder(fitted: Path):
    from epic_hf import EpicExplainer

    assert EpicExplainer.from_pretrained(fitted / "bank").bank.prototypes_per_channel == 2


def test_explain_resnet50_with_a_tiny_model(fitted: Path, assets: Path, tmp_path: Path):
    images = sorted((assets / "images").rglob("*.png"))[:2]
    completed = run([sys.executable, str(EXAMPLES / "explain_resnet50.py"), *map(str, images),
                     "--model", str(assets / "model"), "--bank", str(fitted / "bank"),
                     "--output-dir", str(tmp_path), "--top-k", "2"])
    assert completed.stdout.count("prototypes [") == 4  # 2 images x 2 channels, each with prototypes
    assert completed.stdout.count("CLS term") == 2
    for line in completed.stdout.splitlines():  # the printed decomposition adds up to the printed logit
        if "= sum of contributions + CLS term + bias = " in line:
            logit = float(line.split("logit ")[1].split(" =")[0])
            assert abs(float(line.rsplit("= ", 1)[1]) - logit) < 2e-4
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(p.name for p in images)
    assert (tmp_path / "report.html").is_file()


def test_fit_streaming(assets: Path, tmp_path: Path):
    completed = run([sys.executable, str(EXAMPLES / "fit_streaming.py"), str(assets / "model"),
                     str(assets / "images"), "--output-dir", str(tmp_path / "run"), *SHORT])
    assert "24 streamed images" in completed.stdout
    config = json.loads((tmp_path / "run" / "bank" / "epic_config.json").read_text())
    assert config["dataset"]["streaming"] is True


def test_push_bank(fitted: Path, hub_server):
    repo_id = "tester/examples-push-bank"
    completed = run([sys.executable, str(EXAMPLES / "push_bank.py"), repo_id, "--bank", str(fitted)], offline=False)
    assert f"pushed {repo_id}" in completed.stdout
    info = run([sys.executable, "-m", "epic_hf", "info", repo_id], offline=False)
    assert json.loads(info.stdout)["prototypes_per_channel"] == 2


@pytest.mark.skipif(shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists(),
                    reason="the accelerate CLI is not installed")
def test_distributed_fit_sh_with_one_process(assets: Path, tmp_path: Path):
    env_path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    output = tmp_path / "dist"
    command = ["bash", str(EXAMPLES / "distributed_fit.sh"), str(assets / "model"), str(assets / "images"),
               str(output), "1", *SHORT]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=ROOT,
                               env={**subprocess_env(), "PATH": env_path})
    assert completed.returncode == 0, completed.stderr[-5000:]
    summary = json.loads(completed.stdout[completed.stdout.index("{"):])
    assert summary["num_processes"] == 1
    assert (output / "bank" / "epic_config.json").is_file()
