"""The command's rough edges, each checked as a user meets it: help text, caps, quiet runs, noise."""

from __future__ import annotations

import contextlib
import io
import re

import pytest

from epic_hf import AuditConfig, EvaluationConfig, FitConfig
from epic_hf.cli import build_parser, main
from epic_hf.cli.flags import config_from_args
from epic_hf.config import setting_fields
from epic_hf.viz import MAX_CHANNELS_SHOWN


def help_text(*command: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main([*command, "--help"])
    return out.getvalue()


@pytest.mark.parametrize("command", [[], ["fit"], ["explain"], ["info"], ["atlas"], ["evaluate"], ["audit"],
                                     ["compare"], ["demo"]])
def test_help_shows_one_default_per_option_and_none_for_required_ones(command):
    raw = help_text(*command)
    assert raw.startswith("usage: epic-hf")
    text = " ".join(raw.split())
    assert "(default: None)" not in text
    options = re.split(r"\s(?=-{1,2}[a-z])", text)
    for option in options:
        assert option.count("(default:") <= 1, option


def test_required_output_dir_shows_no_default():
    text = " ".join(help_text("fit").split())
    entry = text[text.index("--output-dir OUTPUT_DIR"):][:120]
    assert "default" not in entry.split("--")[1]


@pytest.mark.parametrize("command, settings", [("fit", FitConfig), ("evaluate", EvaluationConfig),
                                               ("audit", AuditConfig)])
def test_flags_come_from_the_config_with_its_defaults_and_choices(command, settings):
    text = " ".join(help_text(command).split())
    parsed = build_parser().parse_args([command, "BANK", "DATA"] + (["--output-dir", "o"] if command == "fit" else []))
    assert config_from_args(settings, parsed) == settings()  # no flag given: exactly the config's defaults
    for spec in setting_fields(settings):
        assert "--" + spec.name.replace("_", "-") in text
        for choice in spec.metadata["choices"] or ():
            assert choice in text
    if command == "fit":
        assert "(default: 512, the paper's)" in text


def test_flags_reach_the_config_through_its_section():
    parsed = build_parser().parse_args(["evaluate", "BANK", "DATA", "--split", "test", "--top-k", "7", "--streaming"])
    config = config_from_args(EvaluationConfig, parsed)
    assert (config.data.split, config.data.streaming, config.top_k) == ("test", True, 7)


def test_top_k_beyond_the_picture_cap_is_refused_with_the_cap(tmp_path):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["explain", str(tmp_path), str(tmp_path / "x.png"), "--top-k", "100000"])
    assert code == 1 and f"between 1 and {MAX_CHANNELS_SHOWN}" in err.getvalue()


def test_bad_fit_settings_are_refused_before_any_model_loads(tmp_path):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["fit", "acme/not-loaded", str(tmp_path), "--output-dir", str(tmp_path / "o"),
                     "--thumbnail-quality", "400"])
    assert code == 1 and "thumbnail_quality" in err.getvalue() and "acme" not in err.getvalue()


def test_torchvision_notice_is_filtered_at_the_cli_only():
    import logging

    from epic_hf.cli import _filter_library_noise

    record = logging.LogRecord("transformers.utils.import_utils", logging.WARNING, __file__, 1,
                               "`ConvNextImageProcessor` requires torchvision (not installed); falling back", None, None)
    assert not _filter_library_noise(record)
    assert build_parser().prog == "epic-hf"


def test_quiet_hides_every_librarys_progress_bars(tmp_path):
    import datasets
    import transformers
    from huggingface_hub.utils import enable_progress_bars

    from epic_hf.progress import enable_progress_bars as enable_ours
    from epic_hf.synthetic import planted_dataset, tiny_resnet

    model, processor = tiny_resnet(4, (8, 8), seed=1)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    planted_dataset(1, num_classes=4, size=32)["image"][0].save(tmp_path / "one.png")
    loud, quiet = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(loud):
        assert main(["explain", str(tmp_path / "model"), str(tmp_path / "one.png")]) == 0
    try:
        with contextlib.redirect_stderr(quiet):
            assert main(["-q", "explain", str(tmp_path / "model"), str(tmp_path / "one.png")]) == 0
    finally:
        enable_ours()
        enable_progress_bars()
        datasets.enable_progress_bars()
        transformers.utils.logging.enable_progress_bar()
        transformers.utils.logging.set_verbosity_warning()
    assert "Loading weights" in loud.getvalue()
    assert "Loading weights" not in quiet.getvalue() and "it/s" not in quiet.getvalue()
