"""docs/supported_models.md is generated from the adapter registry and must not go stale."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import transformers
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

from epic_hf.adapters import ADAPTERS, REFUSED

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gen_supported_models.py"
DOC = ROOT / "docs" / "supported_models.md"


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("gen_supported_models", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _documented_version() -> str:
    match = re.search(r"\(transformers (\d+\.\d+): \d+ model types\)", DOC.read_text(encoding="utf-8"))
    assert match, "the doc names the transformers version its table describes"
    return match.group(1)


def test_the_doc_matches_the_registry(generator, capsys):
    installed = ".".join(transformers.__version__.split(".")[:2])
    if installed != _documented_version():
        pytest.skip(f"the doc describes transformers {_documented_version()}, this is {installed}")
    assert generator.main(["--check"]) == 0, capsys.readouterr().err


def test_check_mode_fails_on_a_stale_doc(generator, tmp_path, monkeypatch, capsys):
    stale = tmp_path / "supported_models.md"
    stale.write_text(generator.render().replace("supported exactly", "supported", 1), encoding="utf-8")
    monkeypatch.setattr(generator, "DOC", stale)
    assert generator.main(["--check"]) == 1
    assert "is stale" in capsys.readouterr().err
    assert generator.main([]) == 0 and generator.main(["--check"]) == 0


def test_every_image_classification_type_has_one_row_with_its_status(generator):
    text = generator.render()
    for model_type in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        rows = [line for line in text.splitlines() if line.startswith(f"| `{model_type}` |")]
        assert len(rows) == 1, model_type
        if model_type in ADAPTERS and model_type != "timm_wrapper":
            expected = "supported with a CLS term" if ADAPTERS[model_type].has_extra_logits else "supported exactly"
            assert f"| {expected} |" in rows[0]
        elif model_type in REFUSED:
            assert "| refused" in rows[0] and REFUSED[model_type].reason.split(",")[0] in rows[0]
