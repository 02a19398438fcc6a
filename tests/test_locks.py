"""One writer per output directory: a second fit or evaluation names the holder and stops; a stale lock is taken over."""

from __future__ import annotations

import json
import logging
import os
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


#: Trials of the race below, and contenders in each: enough to catch a window of microseconds, in seconds.
RACE_TRIALS = 200
CONTENDERS = 3


def test_contenders_started_at_one_instant_leave_exactly_one_holder(tmp_path):
    """Separate processes released by one barrier take the same lock, 200 times; in every second trial the
    directory holds a stale lock (its process is gone) that all of them want to take over at once."""
    import multiprocessing

    from lock_race import BARRIER_SECONDS, contend

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    context = multiprocessing.get_context("fork")  # separate processes, without importing torch again
    start, done = context.Barrier(CONTENDERS + 1), context.Barrier(CONTENDERS + 1)
    results = context.Queue()
    workers = [context.Process(target=contend, args=(str(tmp_path), RACE_TRIALS, start, done, results))
               for _ in range(CONTENDERS)]
    for worker in workers:
        worker.start()
    try:
        winners_per_trial = []
        for trial in range(RACE_TRIALS):
            if trial % 2:
                _hold(tmp_path / str(trial), dead)
            start.wait(BARRIER_SECONDS)
            outcomes = [results.get(timeout=BARRIER_SECONDS) for _ in range(CONTENDERS)]
            assert {t for t, _, _ in outcomes} == {trial}
            winners_per_trial.append(sum(won for _, _, won in outcomes))
            done.wait(BARRIER_SECONDS)
    finally:
        for worker in workers:
            worker.join(BARRIER_SECONDS)
            if worker.is_alive():
                worker.kill()
    assert winners_per_trial == [1] * RACE_TRIALS, [(t, n) for t, n in enumerate(winners_per_trial) if n != 1]
    assert not list(tmp_path.glob(f"*/{LOCK_NAME}"))  # every winner let go
    assert not list(tmp_path.glob("*/.epic-partial-*"))  # no record left half-way


def test_every_file_of_a_fit_is_written_inside_its_lock_and_whole(tmp_path, monkeypatch):
    """purity.png included: a second run cannot start between the fit's last file and the picture. Every file
    opened for writing in the output dir, by Python code (PIL, json, our own), is a temporary one of
    epic_hf.atomic, so none can be seen half-written."""
    from epic_hf.atomic import TEMP_PREFIX

    run = tmp_path / "run"
    seen_at_release: list[set[str]] = []
    release = DirectoryLock.release

    def release_noting_the_files(lock: DirectoryLock) -> None:
        if lock.path.parent == run:
            seen_at_release.append({p.relative_to(run).as_posix() for p in run.rglob("*")})
        release(lock)

    direct: list[str] = []
    watching = [True]

    def audit(event: str, args: tuple) -> None:
        if watching[0] and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            path, mode, flags = os.fsdecode(args[0]), args[1], args[2]
            writes = (mode is not None and set("wax+") & set(str(mode))) or (
                mode is None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if writes and path.startswith(str(run)) and not os.path.basename(path).startswith(TEMP_PREFIX):
                direct.append(f"{path} ({mode or flags})")

    monkeypatch.setattr(DirectoryLock, "release", release_noting_the_files)
    sys.addaudithook(audit)  # an audit hook cannot be removed: it is switched off below
    try:
        explainer = EpicExplainer.from_pretrained(str(save_tiny_model("resnet", tmp_path / "model")))
        explainer.fit(planted_dataset(24, size=32), output_dir=run, prototypes_per_channel=2, schedule_start=4,
                      schedule_end=2, schedule_steps=1)
    finally:
        watching[0] = False
    assert (run / "purity.png").is_file() and len(seen_at_release) == 1
    assert {"purity.png", "bank/epic_bank.safetensors", "fit_report.json"} <= seen_at_release[0]
    assert direct == [], direct
    assert not list(run.rglob(f"{TEMP_PREFIX}*"))
