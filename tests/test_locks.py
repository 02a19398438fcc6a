"""One writer per output directory: a second fit or evaluation names the holder and stops; a stale lock is taken over."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys

import pytest

from epic_hf import EpicExplainer, OutputDirLockedError
from epic_hf.locks import LOCK_NAME, DirectoryLock
from epic_hf.synthetic import planted_dataset
from test_cli import assert_one_line_error, epic_hf
from tiny_models import save_tiny_model


@pytest.fixture
def running_process():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


def _hold(directory, pid: int, host: str | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / LOCK_NAME).write_text(json.dumps({"what": "fit", "host": host or socket.gethostname(), "pid": pid,
                                                   "started": "2026-12-06 03:00:00"}))


def test_a_held_directory_refuses_a_second_writer_naming_the_holder(tmp_path, running_process):
    _hold(tmp_path, running_process)
    with pytest.raises(OutputDirLockedError, match=f"process {running_process}") as refused:
        DirectoryLock(tmp_path, "fit").acquire()
    assert "\n" not in str(refused.value) and str(tmp_path / LOCK_NAME) in str(refused.value)


def test_a_lock_on_another_host_is_not_taken_over(tmp_path):
    _hold(tmp_path, 1, host="elsewhere.example")
    with pytest.raises(OutputDirLockedError, match="elsewhere.example"):
        DirectoryLock(tmp_path, "fit").acquire()


def test_a_stale_lock_is_taken_over_and_released(tmp_path, caplog):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _hold(tmp_path, int(finished.stdout))
    with caplog.at_level(logging.WARNING), DirectoryLock(tmp_path, "fit") as lock:
        assert json.loads(lock.path.read_text())["pid"] != int(finished.stdout)
    assert "stale lock" in caplog.text and not (tmp_path / LOCK_NAME).exists()


def test_a_fit_and_an_evaluation_hold_their_directory_and_let_go(tmp_path, running_process):
    model_dir = save_tiny_model("resnet", tmp_path / "model")
    data = planted_dataset(24, size=32)
    explainer = EpicExplainer.from_pretrained(str(model_dir))
    settings = dict(prototypes_per_channel=2, schedule_start=4, schedule_end=2, schedule_steps=1)
    _hold(tmp_path / "run", running_process)
    with pytest.raises(OutputDirLockedError):
        explainer.fit(data, output_dir=tmp_path / "run", **settings)
    assert not (tmp_path / "run" / "fit_args.json").exists()  # refused before anything was written
    (tmp_path / "run" / LOCK_NAME).unlink()
    explainer.fit(data, output_dir=tmp_path / "run", **settings)
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    _hold(tmp_path / "evaluation", running_process)
    with pytest.raises(OutputDirLockedError):
        explainer.evaluate(data, output_dir=tmp_path / "evaluation", max_samples=8)
    (tmp_path / "evaluation" / LOCK_NAME).unlink()
    explainer.evaluate(data, output_dir=tmp_path / "evaluation", max_samples=8)
    assert not (tmp_path / "evaluation" / LOCK_NAME).exists()


def test_the_command_line_says_who_holds_the_directory(tmp_path, running_process):
    model_dir = save_tiny_model("resnet", tmp_path / "model")
    (tmp_path / "images").mkdir()
    planted_dataset(4, size=32)[0]["image"].save(tmp_path / "images" / "a.png")
    _hold(tmp_path / "run", running_process)
    completed = epic_hf("fit", str(model_dir), str(tmp_path / "images"), "--output-dir", str(tmp_path / "run"),
                        check=False)
    assert_one_line_error(completed, "in use by another epic-hf fit", str(running_process))
