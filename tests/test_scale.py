"""Streams, several processes and interrupted runs all end with the same bank."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from epic_hf.synthetic import planted_dataset, tiny_resnet

pytestmark = pytest.mark.slow  # subprocesses or the local Hub server

SCRIPT = Path(__file__).with_name("fit_script.py")
# torchrun on CPU: accelerate reads RANK / WORLD_SIZE and sets up a gloo process group on loopback.
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _torchrun() -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(_free_port())]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    model, processor = tiny_resnet(3, (8, 8), seed=1)
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    planted_dataset(50, num_classes=3, size=32, seed=2).save_to_disk(str(root / "data"))
    return root


def _run(assets: Path, name: str, *extra: str, launcher: list[str] | None = None, output: bool = True,
         check: bool = True) -> subprocess.CompletedProcess:
    result = assets / f"{name}.safetensors"
    output_dir = str(assets / f"{name}-out") if output else "-"
    command = (launcher or [sys.executable]) + [str(SCRIPT), str(assets / "model"), str(assets / "data"),
                                                output_dir, str(result), *extra]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)
    if check and completed.returncode != 0:
        raise AssertionError(f"{command} failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-5000:]}")
    return completed


def _bank(assets: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(assets / f"{name}.safetensors"))


def _report(assets: Path, name: str) -> dict:
    return json.loads((assets / f"{name}.safetensors.json").read_text())


def _assert_same_bank(a: dict, b: dict, atol: float = 1e-5) -> None:
    assert torch.equal(a["sample_keys"], b["sample_keys"])
    torch.testing.assert_close(a["scores"], b["scores"], atol=atol, rtol=1e-5)
    assert torch.equal(a["boxes"], b["boxes"])
    torch.testing.assert_close(a["S"], b["S"], atol=atol, rtol=1e-4)


@pytest.fixture(scope="module")
def reference(assets):
    _run(assets, "reference", output=False)
    return _bank(assets, "reference")


def test_stream_gives_the_same_bank_as_map_style(assets, reference):
    _run(assets, "stream", "--stream", output=False)
    _assert_same_bank(_bank(assets, "stream"), reference)


def test_two_processes_give_the_same_bank(assets, reference):
    launcher = _torchrun()
    _run(assets, "two", launcher=launcher, output=False)
    assert _report(assets, "two")["num_processes"] == 2
    _assert_same_bank(_bank(assets, "two"), reference)


def test_two_processes_on_a_stream_with_accelerate_launch(assets, reference):
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    launcher = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    _run(assets, "two-stream", "--stream", launcher=launcher, output=False)
    assert _report(assets, "two-stream")["num_processes"] == 2
    _assert_same_bank(_bank(assets, "two-stream"), reference)


def test_killed_after_the_index_pass_resumes(assets, reference):
    killed = _run(assets, "after-index", "--kill-at", "purity before training", check=False)
    assert killed.returncode != 0
    out = assets / "after-index-out"
    assert (out / "index.safetensors").is_file() and not (out / "train_state.safetensors").exists()
    _run(assets, "after-index")
    report = _report(assets, "after-index")
    assert report["resumed_from_step"] == 0
    _assert_same_bank(_bank(assets, "after-index"), reference)


def test_killed_mid_schedule_resumes_from_the_last_finished_step(assets, reference):
    killed = _run(assets, "mid", "--kill-at", "step 3/4", check=False)
    assert killed.returncode != 0
    assert (assets / "mid-out" / "train_state.safetensors").is_file()
    _run(assets, "mid")
    report = _report(assets, "mid")
    assert report["resumed_from_step"] == 2 and len(report["steps"]) == 4
    _assert_same_bank(_bank(assets, "mid"), reference)
    # a finished run started again loads its bank instead of fitting again
    again = _run(assets, "mid")
    assert "EPIC index pass" not in again.stderr
    _assert_same_bank(_bank(assets, "mid"), reference)


def test_changed_arguments_are_refused(assets, tmp_path):
    from epic_hf import CheckpointMismatchError, EpicExplainer
    import datasets

    data = datasets.load_from_disk(str(assets / "data"))
    explainer = EpicExplainer.from_pretrained(str(assets / "model"))
    small = dict(prototypes_per_channel=2, schedule_start=4, schedule_end=2, schedule_steps=1)
    explainer.fit(data, output_dir=str(tmp_path), **small)
    with pytest.raises(CheckpointMismatchError, match="schedule_start"):
        explainer.fit(data, output_dir=str(tmp_path), **{**small, "schedule_start": 5})
