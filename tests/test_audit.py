"""The audit on planted cases with known answers: a corner-tag shortcut, planted label flips, a clean model.

Each model is a tiny ResNet trained here on planted data (epic_hf.synthetic): the shortcut data has
two classes that differ only by a tag in the bottom-right corner and six green squares relabelled
'red circle'; the clean data has objects at random places and nothing planted. Each is trained and
fit once per module.
"""

import json
import logging
import re
import runpy
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from epic_hf import AuditConfig, AuditReport, EpicExplainer, compare_banks
from epic_hf.audit.compare import match, overlaps
from epic_hf.audit.findings import null_max_counts, where
from epic_hf.cli import main
from epic_hf.synthetic import flipped_rows, planted_dataset, shortcut_dataset, tiny_resnet, tiny_vit, train_classifier

SHORTCUT_LABELS = ["red circle", "tagged circle", "green square"]
SIZE = 32  # 32 px images: a 4 x 4 feature grid, and a quarter of the training time of 64 px
FIT = {"prototypes_per_channel": 5, "schedule_start": 20, "schedule_end": 5, "schedule_steps": 3}


def _trained(dataset, labels, seed):
    model, processor = tiny_resnet(len(labels), seed=seed, image_size=SIZE, labels=labels)
    train_classifier(model, processor, dataset, epochs=5, batch_size=16, lr=1e-2, seed=seed)
    return model, processor


@pytest.fixture(scope="module")
def shortcut(tmp_path_factory):
    root = tmp_path_factory.mktemp("shortcut")
    data = shortcut_dataset(240, size=SIZE, seed=0, flipped=6)
    model, processor = _trained(data, SHORTCUT_LABELS, seed=0)
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    explainer = EpicExplainer.from_pretrained(root / "model")
    started = time.perf_counter()
    explainer.fit(data, output_dir=root / "fit", **FIT)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    report = explainer.audit(data, output_dir=root / "audit")
    audit_seconds = time.perf_counter() - started
    return {"root": root, "data": data, "explainer": explainer, "report": report,
            "fit_seconds": fit_seconds, "audit_seconds": audit_seconds}


@pytest.fixture(scope="module")
def clean():
    data = planted_dataset(240, num_classes=3, size=SIZE, seed=1)
    model, processor = _trained(data, list(data.features["label"].names), seed=1)
    explainer = EpicExplainer(model, processor)
    explainer.fit(data, **FIT)
    return {"data": data, "explainer": explainer, "report": explainer.audit(data)}


def test_the_tag_shortcut_leads_the_findings_naming_its_channel_and_place(shortcut):
    report = shortcut["report"]
    fixed = report.of_kind("fixed_position")
    assert fixed, report.to_markdown()
    assert report.findings[0] is fixed[0]  # listed first
    tagged = SHORTCUT_LABELS.index("tagged circle")
    for finding in fixed:  # precision: every fixed-position finding is the tag
        assert finding.classes[0] == tagged, finding.message
        assert "bottom-right corner" in finding.message
        grid = report.grid_size
        assert finding.numbers["cell"] == [grid[0] - 1, grid[1] - 1]
        assert f"channel {finding.channel} " in finding.message
        assert len(finding.samples) == len(finding.boxes) == 20
    # the channel is one the class really relies on, by the bank's own class evidence
    strongest = [channel for channel, _ in shortcut["explainer"].class_channels(tagged, top_k=5)]
    assert fixed[0].channel in strongest
    # and its top activations are tagged images: their boxes sit in the bottom-right corner
    height, width = report.input_size
    assert all(box[0] >= width * 3 // 4 and box[1] >= height * 3 // 4 for box in fixed[0].boxes)


def test_planted_label_errors_lead_the_suspect_list(shortcut):
    suspects = shortcut["report"].of_kind("suspect_label")
    flipped = set(flipped_rows(shortcut["data"]))
    assert suspects
    found = [finding.samples[0] for finding in suspects]
    hits = [key in flipped for key in found]
    assert all(hits[:4]), [f.message for f in suspects]  # the four most suspect are planted flips
    assert sum(hits) >= 4  # recall: at least four of the six
    scores = [finding.score for finding in suspects]
    assert scores == sorted(scores, reverse=True)
    green = SHORTCUT_LABELS.index("green square")
    for finding in suspects[:2]:
        assert finding.classes == [green, SHORTCUT_LABELS.index("red circle")]
        assert finding.channels and "carried by channels" in finding.message


def test_a_clean_model_gets_no_fixed_position_finding(clean):
    report = clean["report"]
    assert report.of_kind("fixed_position") == [], report.to_markdown()
    assert report.reused_index and report.backbone_images < report.num_samples  # a fit with no output_dir: in memory
    assert report.of_kind("suspect_label")[:1] == [] or report.of_kind("suspect_label")[0].score < 0.9


def test_two_classes_drawn_alike_are_the_shared_confusion_and_nothing_else_is(tmp_path):
    # 'red circle' and 'red circle too' are drawn the same way: the model can only guess between them
    import datasets

    from epic_hf.synthetic import planted_image

    rng = np.random.default_rng(0)
    names = ["red circle", "red circle too", "green square"]
    labels = [row % 3 for row in range(240)]
    images = [planted_image("green square" if label == 2 else "red circle", rng, SIZE) for label in labels]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    data = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    explainer = EpicExplainer(*_trained(data, names, seed=0))
    explainer.fit(data, **FIT)
    report = explainer.audit(data)
    confusions = report.of_kind("shared_confusion")
    assert confusions, report.to_markdown()
    assert all(sorted(f.classes) == [0, 1] for f in confusions)  # precision: only the pair drawn alike
    assert all("'red circle' and 'red circle too' are confused" in f.message for f in confusions)
    assert not [f for f in report.findings if f.kind in ("fixed_position", "off_class") and 2 in f.classes]


def test_the_audit_reuses_the_fits_index_and_runs_the_backbone_on_prototypes_only(shortcut):
    report = shortcut["report"]
    assert report.reused_index
    assert 0 < report.backbone_images < report.num_samples
    ratio = shortcut["audit_seconds"] / shortcut["fit_seconds"]
    print(f"audit/fit time: {shortcut['audit_seconds']:.2f} s / {shortcut['fit_seconds']:.2f} s = {ratio:.2f}")
    # the fit kept its index in memory; the one in its output_dir gives the same findings
    explainer = shortcut["explainer"]
    assert explainer.fit_index is not None and explainer.fit_dir is not None
    kept, explainer.fit_index = explainer.fit_index, None
    try:
        from_disk = explainer.audit(shortcut["data"])
    finally:
        explainer.fit_index = kept
    assert from_disk.reused_index
    assert [(f.kind, f.channel, f.samples, round(f.score, 9)) for f in from_disk.findings] == \
        [(f.kind, f.channel, f.samples, round(f.score, 9)) for f in report.findings]
    # on other data (here: the same images saved and read back, so another fingerprint) it runs its own pass,
    # and finds the same shortcut
    folder = shortcut["root"] / "saved"
    shortcut["data"].save_to_disk(str(folder))
    again = shortcut["explainer"].audit(str(folder))
    assert not again.reused_index and again.backbone_images >= again.num_samples
    assert [(f.kind, f.channel) for f in again.of_kind("fixed_position")] == \
        [(f.kind, f.channel) for f in report.of_kind("fixed_position")]


def test_audit_files_round_trip_and_the_page_shows_every_finding(shortcut):
    folder = shortcut["root"] / "audit"
    loaded = AuditReport.from_dict(json.loads((folder / "audit.json").read_text()))
    report = shortcut["report"]
    assert [(f.kind, f.channel, f.samples) for f in loaded.findings] == \
        [(f.kind, f.channel, f.samples) for f in report.findings]
    page = (folder / "audit.html").read_text()
    assert (folder / "atlas.css").is_file()
    for finding in report.findings:
        assert finding.message.replace("'", "&#x27;") in page
        for key in finding.samples:
            assert (folder / "audit-images" / f"{key}.jpg").is_file()
    carried = sum(len(entry["boxes"]) for f in report.findings for entry in f.prototypes)
    assert page.count('class="box"') == sum(len(f.boxes) for f in report.findings) + carried
    assert _referenced_files_exist(page, folder)


def _referenced_files_exist(page, folder):
    sources = re.findall(r'src="([^"]+)"', page)
    assert sources and all((folder / src).is_file() for src in sources), [s for s in sources if not (folder / s).is_file()]
    return True


def test_suspect_cards_show_the_banks_prototypes_of_the_channels_that_carry_the_prediction(shortcut):
    report, bank = shortcut["report"], shortcut["explainer"].bank
    folder = shortcut["root"] / "audit"
    page = (folder / "audit.html").read_text()
    cards = page.split('<div class="cards">', 1)[1].split('<h2 id="confusion">', 1)[0].split('<section class="finding">')[1:]
    suspects = report.of_kind("suspect_label")
    assert suspects and len(cards) == len(suspects)
    for finding, card in zip(suspects, cards):
        assert [entry["channel"] for entry in finding.prototypes] == finding.channels[:3]
        for entry in finding.prototypes:  # the bank's top prototypes of that channel, best first, at most 3
            assert entry["samples"] == bank.sample_keys[entry["channel"], :3].tolist()
            assert f"channel {entry['channel']}<br>prototypes" in card
            for key in entry["samples"]:
                assert f'src="audit-prototypes/{key}.jpg"' in card
                assert (folder / "audit-prototypes" / f"{key}.jpg").read_bytes() == bank.thumbnails[key]


def test_the_null_and_the_words_for_a_place():
    uniform = torch.full((64,), 1 / 64)
    assert null_max_counts(uniform, 2000, 20, 0).max() < 10  # 20 peaks spread over 64 cells rarely pile up
    assert where(7, 7, (8, 8)) == "bottom-right corner" and where(0, 4, (8, 8)) == "top edge"
    assert where(4, 4, (8, 8)) == "centre"
    with pytest.raises(ValueError, match="fixed_position_share must be at most 1"):
        AuditConfig(fixed_position_share=1.5)


def test_cli_audit(shortcut, tmp_path, capsys):
    data_dir = shortcut["root"] / "saved"
    if not data_dir.exists():
        shortcut["data"].save_to_disk(str(data_dir))
    out = tmp_path / "out"
    assert main(["audit", str(shortcut["root"] / "fit"), str(data_dir), "--output-dir", str(out),
                 "--top-n", "10"]) == 0
    printed = capsys.readouterr().out
    assert "fixed_position" in printed and "bottom-right corner" in printed
    assert json.loads((out / "audit.json").read_text())["settings"]["top_n"] == 10
    assert (out / "audit.html").is_file()
    fit = str(shortcut["root"] / "fit")
    assert main(["compare", fit, fit, str(data_dir), "--output-dir", str(tmp_path / "compare"), "--top-n", "5"]) == 0
    assert "compare.html" in capsys.readouterr().out
    assert _referenced_files_exist((tmp_path / "compare" / "compare.html").read_text(), tmp_path / "compare")


def test_a_bank_compared_with_itself_matches_every_channel(shortcut, caplog):
    # (the command, epic-hf compare, runs in docs/cli.md and docs/audit.md)
    explainer = shortcut["explainer"]
    with caplog.at_level(logging.INFO, logger="epic_hf.audit.index"):
        same = compare_banks(explainer, explainer, shortcut["data"])  # each side's fit index, kept in memory
    assert caplog.text.count("reusing the fit's pooled index") == 2
    assert same.only_a == same.only_b == [] and all(row["moved"] == 0 for row in same.moved)
    assert len(same.matches) == explainer.num_channels
    assert all(a == b and overlap == 1 for a, b, overlap in same.matches)
    assert all(len(keys) == 4 for keys in same.shared)  # a channel's top images are all shared with itself


def test_the_compare_page_shows_the_pairs_and_the_lone_concepts_with_their_images(shortcut, clean, tmp_path,
                                                                                  monkeypatch):
    from epic_hf.audit import compare, write_compare
    from epic_hf.viz.compare_page import PAIRS_SHOWN

    # these two tiny models share every driving concept at the 0.2 overlap (their best overlaps reach 0.74):
    # a stricter match makes some concepts each model's alone, so the page has them to show
    monkeypatch.setattr(compare, "MATCH_OVERLAP", 0.7)
    report = compare_banks(shortcut["explainer"], clean["explainer"], shortcut["data"],
                           fit_dirs=(shortcut["explainer"].fit_dir, None))
    page = write_compare(report, tmp_path).read_text()
    stored = json.loads((tmp_path / "compare.json").read_text())
    assert stored["matches"] == [list(pair) for pair in report.matches] and "thumbnails" not in stored
    assert report.only_a and report.only_b
    for (a, b, overlap), keys in list(zip(report.matches, report.shared))[:PAIRS_SHOWN]:
        assert f"A {a} = B {b}" in page and f"overlap {overlap:.2f}" in page
        assert all(f'src="compare-images/{key}.jpg"' in page for key in keys)
    for side, rows in (("A", stored["only_a"]), ("B", stored["only_b"])):
        section = page.split(f"Concepts only in {side}</h2>", 1)[1].split("<h2", 1)[0]
        assert "by 0.7 or more" in section
        for row in rows:
            assert f"channel {row['channel']}</span>" in section and row["label"] in section
            assert row["samples"] and all(f'src="compare-images/{key}.jpg"' in section for key in row["samples"])
    assert _referenced_files_exist(page, tmp_path) and (tmp_path / "atlas.css").is_file()
    assert page.count("<tr>") == len(report.moved) + (1 if report.moved else 0)


def test_channels_are_matched_by_the_overlap_of_their_top_activations():
    top_a = torch.tensor([[1, 2, 3, 4], [10, 11, 12, 13], [20, 21, 22, 23]])
    top_b = torch.tensor([[12, 13, 10, 11], [1, 2, 3, 9], [30, 31, 32, 33]])
    overlap = overlaps(top_a, top_b)
    assert overlap[1, 0] == 1 and overlap[0, 1] == pytest.approx(3 / 5) and overlap[2].max() == 0
    assert match(overlap) == [(1, 0, 1.0), (0, 1, pytest.approx(0.6))]  # channel 2 of A is a concept of A alone


def test_the_atlas_and_the_audit_link_to_each_other(shortcut, tmp_path):
    from epic_hf.audit import write_audit
    from epic_hf.viz.atlas import write_atlas

    index = write_atlas(shortcut["explainer"].bank, tmp_path)
    assert 'id="audit-link" hidden' in index.read_text()  # no audit yet: no dead link
    page = write_audit(shortcut["report"], tmp_path)
    assert 'id="audit-link" hidden' not in index.read_text() and 'href="audit.html"' in index.read_text()
    assert '<a href="index.html">Atlas</a>' in page.read_text()
    write_atlas(shortcut["explainer"].bank, tmp_path)  # an atlas written again keeps the link
    assert 'id="audit-link" hidden' not in index.read_text()


def test_the_shortcut_example_runs_end_to_end(tmp_path, monkeypatch, capsys):
    # small and short, in this process: that the README's story runs (what it must find is tested above)
    script = Path(__file__).resolve().parent.parent / "examples" / "audit_shortcut.py"
    picture = tmp_path / "story.png"
    monkeypatch.setattr(sys, "argv", [str(script), "--output-dir", str(tmp_path / "run"), "--picture", str(picture),
                                      "--images", "48", "--size", "32", "--epochs", "1"])
    runpy.run_path(str(script), run_name="__main__")
    printed = capsys.readouterr().out
    assert "EPIC audit of 48 samples" in printed and "index reused: True" in printed
    assert (tmp_path / "run" / "audit" / "audit.html").is_file()
    assert picture.is_file() or "0 findings" in printed


def test_the_app_shows_the_audit_in_its_own_tab(shortcut):
    from epic_hf.app.audit_view import audit_findings

    shown = audit_findings(shortcut["root"] / "audit")
    report = shortcut["report"]
    assert len(shown) == len(report.findings)
    text, pictures = shown[0]
    assert "fixed position" in text and "bottom\\-right corner" in text  # labels are data: escaped Markdown
    assert len(pictures) == 20 and pictures[0][1] == f"#{report.findings[0].samples[0]}"
    corner = pictures[0][0].getpixel((pictures[0][0].width - 2, pictures[0][0].height - 2))
    assert corner[0] > 200 and corner[1] < 120  # the peak box drawn in the bottom-right cell
    with pytest.raises(ValueError, match="not an audit"):
        audit_findings(shortcut["root"])
    gradio = pytest.importorskip("gradio")
    from epic_hf.app import build_app

    blocks = build_app(shortcut["explainer"], audit=shortcut["root"] / "audit")
    try:
        tabs = [block.label for block in blocks.blocks.values() if isinstance(block, gradio.Tab)]
        assert tabs[-1] == "Audit"
    finally:
        blocks.epic_remove_files()


def test_a_cls_token_model_is_audited_with_its_own_pass_and_says_why(tmp_path):
    # the fit's index keeps avg_hw F but not the CLS term of the logits: reusing it would misstate them
    data = planted_dataset(24, num_classes=3, size=64, seed=0)
    model, processor = tiny_vit(3, layers=2, width=32)
    explainer = EpicExplainer(model, processor)
    explainer.fit(data, output_dir=tmp_path, prototypes_per_channel=3, schedule_start=6, schedule_end=3,
                  schedule_steps=1)
    report = explainer.audit(data, top_n=5)
    assert not report.reused_index and report.backbone_images >= 24
    assert any("CLS term" in note for note in report.notes)
    own = model(pixel_values=processor(images=[im.convert("RGB") for im in data["image"]],
                                       return_tensors="pt")["pixel_values"]).logits.argmax(-1)
    assert report.confusion is not None
    assert [sum(row[k] for row in report.confusion) for k in range(3)] == torch.bincount(own, minlength=3).tolist()
