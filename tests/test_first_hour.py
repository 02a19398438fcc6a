"""The first hour without traps (issue 34): each trap a new user met, reproduced as they met it.

Class folders spelled as people spell folders; an empty folder, Dataset or stream; a fit that
lowers purity; the model folder's absolute path in pages a stranger reads; hints that name the
wrong thing (gradio's ``share=True`` to a CLI user, the CJK extra for an emoji, "not in this
dataset" for keys that matched by row index).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from epic_hf import EpicExplainer
from epic_hf.cli import main
from epic_hf.synthetic import CONCEPTS, planted_dataset, planted_image, tiny_resnet

FIT = dict(schedule_start=6, schedule_end=3, schedule_steps=2, prototypes_per_channel=3, batch_size=32)


def run_cli(*args: str) -> tuple[int, str, str]:
    """``epic-hf ARGS`` through its ``main``, as the console script runs it: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exited:
            code = int(exited.code or 0)
    return code, out.getvalue(), err.getvalue()


def one_error_line(stderr: str) -> str:
    """The one ``epic-hf: error:`` line a failed command ends with (and no traceback)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("epic-hf: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def save_pictures(folder: Path, concept: str, count: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        planted_image(concept, rng, 64).save(folder / f"{index}.png")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A classifier folder whose labels have spaces ("red circle"), and a bank fitted on it, beside it."""
    root = tmp_path_factory.mktemp("first_hour")
    model, processor = tiny_resnet(3, (8, 8), seed=3)
    model.save_pretrained(root / "classifier")
    processor.save_pretrained(root / "classifier")
    explainer = EpicExplainer.from_pretrained(root / "classifier")
    explainer.fit(planted_dataset(30, num_classes=3, size=32, seed=0), **FIT)
    explainer.save_pretrained(root / "bank")
    return root


# -- 1. class folders named as people name folders ------------------------------------------------

def test_class_folders_match_labels_ignoring_case_underscores_and_hyphens(project: Path, tmp_path: Path):
    photos = tmp_path / "photos"
    save_pictures(photos / "red_circle", "red circle", 2, seed=1)
    save_pictures(photos / "Green-Square", "green square", 2, seed=2)
    save_pictures(photos / "blue_triangel", "blue triangle", 1, seed=3)  # a typo: matches no label
    save_pictures(photos / "purple hexagon", "blue triangle", 1, seed=4)  # not a class of this model
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("explain", str(project / "bank"), str(photos), "--output", str(out))
    assert code == 0, stderr
    records = {Path(r["image"]).parent.name + "/" + Path(r["image"]).name: r
               for r in json.loads((out / "explanations.json").read_text())}
    for name in ("red_circle/0.png", "red_circle/1.png"):
        assert records[name]["true_label"] == "red circle"
        assert records[name]["correct"] == (records[name]["target_label"] == "red circle")
    assert records["Green-Square/0.png"]["true_label"] == "green square"
    for name in ("blue_triangel/0.png", "purple hexagon/0.png"):  # no hit, and above all no miss
        assert records[name]["true_label"] is None and records[name]["correct"] is None
    report = (out / "report.html").read_text()
    assert report.count("MISS") == sum(r["correct"] is False for r in records.values())
    warnings = [line for line in stderr.splitlines() if "matches none of the model" in line]
    assert len(warnings) == 1, warnings  # one warning, naming both folders
    assert "'blue_triangel' (1 image)" in warnings[0] and "closest: 'blue triangle'" in warnings[0]
    assert "'purple hexagon'" in warnings[0]
    assert "red_circle" not in warnings[0] and "Green-Square" not in warnings[0]


def test_label_matching_rules():
    from epic_hf.naming import closest_labels, match_label

    labels = list(CONCEPTS) + ["great white shark, white shark"]
    assert match_label("RED_circle", labels) == "red circle"
    assert match_label("yellow--cross", labels) == "yellow cross"
    assert match_label("red circle", labels) == "red circle"
    assert match_label("redcircle", labels) is None
    assert match_label("a_b", ["a-b", "a b"]) is None  # two labels match: no guess
    assert match_label("a_b", ["a_b", "a b"]) == "a_b"  # but an exact spelling wins
    assert closest_labels("gren_sqare", labels)[0] == "green square"
    assert match_label("White_Shark", labels) == "great white shark, white shark"  # one of its synonyms
    assert match_label("crane", ["crane", "crane, bird"]) == "crane"
    assert match_label("Crane", ["crane, machine", "crane, bird"]) is None  # ImageNet has two: no guess


# -- 2. empty inputs -------------------------------------------------------------------------------

def _no_examples():
    yield from ()


def empty_input(kind: str, tmp_path: Path):
    """An empty folder, a Dataset of 0 rows, a stream that ends at once, and a CSV file with a header only."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CONCEPTS[:3]))})
    if kind == "folder":
        (tmp_path / "photos" / "red_circle").mkdir(parents=True)  # class folders, but no pictures in them
        (tmp_path / "photos" / "notes.txt").write_text("to do: add the photos")
        return str(tmp_path / "photos"), "photos"
    if kind == "dataset":
        return datasets.Dataset.from_dict({"image": [], "label": []}, features=features), "0 rows"
    if kind == "stream":
        return datasets.IterableDataset.from_generator(_no_examples, features=features), "0 rows"
    (tmp_path / "images.csv").write_text("image,label\n")
    return str(tmp_path / "images.csv"), "images.csv"


@pytest.mark.parametrize("kind", ["folder", "dataset", "stream", "csv"])
def test_fit_and_evaluate_on_nothing_say_so_and_leave_no_output_dir(project: Path, tmp_path: Path, kind: str):
    from epic_hf import EmptyDatasetError, EpicError

    data, named = empty_input(kind, tmp_path)
    classifier = EpicExplainer.from_pretrained(project / "classifier")
    with pytest.raises(EmptyDatasetError, match="holds no image") as raised:
        classifier.fit(data, output_dir=tmp_path / "run", **FIT)
    assert isinstance(raised.value, EpicError) and named in str(raised.value)
    assert "Instruction" not in str(raised.value) and "data files" not in str(raised.value)
    assert not (tmp_path / "run").exists()
    explainer = EpicExplainer.from_pretrained(project / "bank")
    with pytest.raises(EmptyDatasetError, match="holds no image"):
        explainer.evaluate(data, output_dir=tmp_path / "evaluation")
    assert not (tmp_path / "evaluation").exists()


def test_the_cli_names_an_empty_folder_in_one_line_and_keeps_the_users_own_folder(project: Path, tmp_path: Path):
    photos, _ = empty_input("folder", tmp_path)
    code, stdout, stderr = run_cli("fit", str(project / "classifier"), photos, "--output-dir", str(tmp_path / "run"))
    assert code == 1 and stdout == ""
    line = one_error_line(stderr)
    assert "photos" in line and "holds no image files" in line and "put the images there" in line
    assert not (tmp_path / "run").exists()
    mine = tmp_path / "mine"  # a folder the user already had: a failed run never removes it
    mine.mkdir()
    (mine / "notes.md").write_text("keep me")
    code, _, stderr = run_cli("fit", str(project / "classifier"), photos, "--output-dir", str(mine))
    assert code == 1 and (mine / "notes.md").read_text() == "keep me" and sorted(mine.iterdir()) == [mine / "notes.md"]
    code, _, stderr = run_cli("evaluate", str(project / "bank"), photos, "--output-dir", str(tmp_path / "evaluation"))
    assert code == 1 and "holds no image files" in one_error_line(stderr)
    assert not (tmp_path / "evaluation").exists()


# -- 3. a fit that lowers purity -------------------------------------------------------------------

def test_a_fit_that_lowers_purity_says_so_in_its_summary_log_and_model_card(project: Path, tmp_path: Path):
    photos = tmp_path / "photos"
    for seed, concept in enumerate(CONCEPTS[:3]):
        save_pictures(photos / concept.replace(" ", "_"), concept, 10, seed=seed)
    flags = ["--schedule-start", "6", "--schedule-end", "3", "--schedule-steps", "2", "--prototypes-per-channel", "3",
             "--lr", "3.0"]  # a step far too large: the trained U scatters what the raw channels had
    code, stdout, stderr = run_cli("fit", str(project / "classifier"), str(photos), "--output-dir",
                                   str(tmp_path / "run"), *flags)
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["purity_after"] < summary["purity_before"]
    assert "lowered purity from" in summary["warning"]
    assert f"{summary['purity_before']:.3f}" in summary["warning"] and f"{summary['purity_after']:.3f}" in summary["warning"]
    assert any("WARNING" in line and "lowered purity" in line for line in stderr.splitlines())
    card = (tmp_path / "run" / "bank" / "README.md").read_text()
    assert "Purity went down" in card and "lowered purity from" in card


def test_a_fit_that_raises_purity_does_not_warn(project: Path):
    from epic_hf import PrototypeBank
    from epic_hf.model_card import model_card

    config = PrototypeBank.from_pretrained(project / "bank").config
    assert config.purity_after >= config.purity_before  # the fixture's fit, at the paper's learning rate
    assert "Purity went down" not in str(model_card(config))
    lowered = type(config).from_dict({**config.to_dict(), "purity_after": config.purity_before - 0.01})
    assert "Purity went down" in str(model_card(lowered))


# -- 4. no local paths in anything a person reads ---------------------------------------------------

def test_pages_and_cards_name_a_local_model_by_its_folder_name_only(project: Path, tmp_path: Path):
    from epic_hf import PrototypeBank
    from epic_hf.model_card import model_card
    from epic_hf.viz import write_atlas

    private = str(project)  # the author's disk: /tmp/pytest-of-<user>/.../first_hour0
    bank = PrototypeBank.from_pretrained(project / "bank")
    assert bank.config.base_model_name_or_path == str(project / "classifier")  # the bank keeps the path to load
    card = (project / "bank" / "README.md").read_text()
    assert private not in card and "`classifier`" in card
    config = type(bank.config).from_dict({**bank.config.to_dict(), "dataset": {"name": str(tmp_path / "my photos"),
                                                                                "split": "train"}})
    card = str(model_card(config))
    assert str(tmp_path) not in card and private not in card and "`my photos`" in card

    atlas = write_atlas(bank, tmp_path / "atlas")
    pages = [path for path in (tmp_path / "atlas").rglob("*") if path.suffix in (".html", ".js")]
    assert pages
    for page in pages:
        assert private not in page.read_text(encoding="utf-8"), page
    assert "<title>classifier: EPIC bank atlas</title>" in Path(atlas).read_text(encoding="utf-8")


def test_the_app_title_names_a_local_model_by_its_folder_name_only(project: Path):
    pytest.importorskip("gradio")
    from epic_hf.app import build_app

    blocks = build_app(EpicExplainer.from_pretrained(project / "bank"))
    try:
        assert blocks.title == "EPIC explanations of classifier"
        assert str(project) not in json.dumps(blocks.get_config_file(), default=str)
    finally:
        blocks.epic_remove_files()


def test_display_names():
    from epic_hf.naming import display_name

    assert display_name("/home/ana/models/resnet-50") == "resnet-50"
    assert display_name("/home/ana/models/resnet-50/") == "resnet-50"
    assert display_name("~/models/vit") == "vit"
    assert display_name("./runs/vit") == "vit"
    assert display_name("C:\\Users\\ana\\models\\convnext") == "convnext"
    assert display_name("microsoft/resnet-50") == "microsoft/resnet-50"
    assert display_name("imagenet-1k") == "imagenet-1k"
    assert display_name(None) is None and display_name("") is None


# -- 5. hints that name the wrong thing -------------------------------------------------------------

@pytest.mark.slow  # a fresh Python that imports torch and gradio and serves: about 20 s
def test_the_app_command_tells_a_cli_user_about_share_not_launch(project: Path, tmp_path: Path):
    """gradio prints "To create a public link, set `share=True` in `launch()`", which a shell user cannot do."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    pytest.importorskip("gradio")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen([sys.executable, "-m", "epic_hf", "app", str(project / "bank"), "--port", str(port)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 150
        assert process.stdout is not None
        while not any("Ctrl-C stops it" in line for line in lines):
            assert time.monotonic() < deadline and process.poll() is None, "".join(lines)
            lines.append(process.stdout.readline())
        time.sleep(1)  # whatever gradio would print after its start-up line
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C, as a user stops it
        process.wait(timeout=30)
        output = "".join(lines) + (process.stdout.read() if process.stdout else "")  # readline's buffer too
    assert process.returncode == 0, output
    assert f"the app serves http://127.0.0.1:{port}" in output
    assert "run the same command with --share" in output
    assert "share=True" not in output and "launch()" not in output, output


def test_an_emoji_in_a_file_name_asks_for_an_emoji_font_not_the_cjk_extra(project: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    from epic_hf.viz import fonts

    monkeypatch.setattr(fonts, "_warned", set())  # warned once per process: this test's picture must say it
    party = "\U0001f389"  # 🎉, which neither Noto Sans, the CJK font nor DejaVu has
    assert fonts.missing_glyphs(party) == [party]
    picture = tmp_path / f"{party} party.png"
    planted_image("red circle", np.random.default_rng(0), 64).save(picture)
    code, _, stderr = run_cli("explain", str(project / "bank"), str(picture), "--output", str(tmp_path / "out.png"))
    assert code == 0, stderr
    warnings = [line for line in stderr.splitlines() if "drawn as a box" in line]
    assert len(warnings) == 1, stderr
    assert "U+1F389" in warnings[0] and "emoji font" in warnings[0] and "fonts-symbola" in warnings[0]
    assert "epic_hf[cjk]" not in warnings[0]


def test_the_glyph_hint_names_the_font_that_is_missing():
    from epic_hf.viz.fonts import CJK_HINT, EMOJI_HINT, WIDER_CJK_HINT, missing_font_hint

    for installed in (True, False):  # the CJK extra has no emoji: never suggest it for one
        assert missing_font_hint("\U0001f389", cjk_installed=installed) == EMOJI_HINT
    assert missing_font_hint("猫", cjk_installed=False) == CJK_HINT
    assert missing_font_hint("\U00020000", cjk_installed=True) == WIDER_CJK_HINT  # a rare ideograph: not the extra
    assert "epic_hf[cjk]" not in missing_font_hint("ሀ", cjk_installed=False)  # Ethiopic is not CJK


def test_evaluate_says_which_bank_keys_matched_only_by_row_index(project: Path):
    """A bank fit on 30 images, evaluated on 8 others: keys 0-7 are rows here too, but not the bank's images."""
    explainer = EpicExplainer.from_pretrained(project / "bank")
    keys = set(explainer.bank.sample_keys.reshape(-1).tolist())
    below = {key for key in keys if key < 8}
    assert below and len(below) < len(keys)  # some keys are rows of the small dataset, some are not
    report = explainer.evaluate(planted_dataset(8, num_classes=3, size=32, seed=7), random_draws=2)
    note = next(note for note in report.notes if "prototype keys" in note)
    assert note.startswith(f"{len(keys) - len(below)} of the bank's {len(keys)} prototype keys are not rows of this "
                           "dataset (without key_column a key is a row index, and it has 8 rows)")
    assert f"; {len(below)} matched by row index only, and " in note
    assert "not reported" in note and report.purity["bank"] is None
    stream = planted_dataset(8, num_classes=3, size=32, seed=7).to_iterable_dataset()
    note = next(n for n in explainer.evaluate(stream, random_draws=2).notes if "prototype keys" in n)
    assert note.startswith(f"{len(keys) - len(below)} of the bank's {len(keys)} prototype keys are not found in this "
                           f"dataset by key; {len(below)} matched by key only")
