"""The model card of an EPIC repo: what it explains, how well, and how to use it.

Built with ``huggingface_hub``'s ``ModelCard`` / ``ModelCardData``, so its metadata is what the
Hub validates; EPIC's text sits between markers so that a card already on the Hub keeps the
rest of its text when the bank is pushed again (:func:`epic_hf.hub.merge_cards`).
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from .config import EpicConfig
from .hub import CARD_END, CARD_START
from .naming import display_name
from .results import purity_drop_note


def _hub_id(value: object) -> str | None:
    """``value`` when it looks like a Hub id (``org/name``), not a local path."""
    text = str(value or "")
    if text.count("/") == 1 and not text.startswith((".", "/", "~")) and not Path(text).exists():
        return text
    return None


def _patch_share_row(config: EpicConfig) -> str:
    """CLS-token models: how much of the evidence the image patches carry, against the CLS token's own part."""
    if config.patch_share is None:
        return ""
    return (f"| image patches' share of the evidence (mean over the data; the rest is the CLS token's own part and the model's biases) | "
            f"{config.patch_share:.1%} |\n")


def _purity_warning(config: EpicConfig) -> str:
    """A fit that lowered purity says so under the table, in words, not only in two numbers a reader may not compare."""
    note = purity_drop_note(config.purity_before, config.purity_after)
    return "" if note is None else f"\n**Purity went down.** {note[0].upper()}{note[1:]}.\n"


def _metric(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "n/a"


def _curve(config: EpicConfig) -> str:
    """The per-step purity table (the fit's curve), when the bank records it."""
    if not config.steps:
        return ""
    rows = "\n".join(f"| {i + 1} | {s['prototypes']} | {s['purity_before']:.4f} | {s['purity_after']:.4f} |"
                     for i, s in enumerate(config.steps))
    return ("## Purity per schedule step\n\nFor each step, the purity of the freshly mined prototypes before "
            "and after training U on them.\n\n| step | N | before | after |\n| --- | --- | --- | --- |\n"
            f"{rows}\n")


_EVALUATION_ROWS = (
    ("purity (mined on the evaluation data)", "purity", "purity_identity"),
    ("prototype class consistency", "class_consistency", "class_consistency_identity"),
    ("top-k channel set kept under a small shift", "shift_stability", "shift_stability_identity"),
)
#: Shown when the evaluation scored annotated parts (``parts=True``, e.g. on CUB-200-2011).
_PART_ROWS = (
    ("part purity (annotated parts)", "part_purity", "part_purity_identity"),
    ("part consistency", "part_consistency", "part_consistency_identity"),
    ("part stability under noise", "part_stability", "part_stability_identity"),
)


def _evaluation(config: EpicConfig) -> str:
    """The headline numbers of ``explainer.evaluate`` (docs/evaluation.md), EPIC against U = I."""
    values = config.evaluation
    if not values:
        return ""
    rows = "\n".join(f"| {name} | {_metric(values.get(ours))} | {_metric(values.get(raw))} |"
                     for name, ours, raw in _EVALUATION_ROWS + tuple(r for r in _PART_ROWS if r[1] in values))
    deletion = (f"Deleting the top-k channels' exact contributions drops the target logit by "
                f"{_metric(values.get('deletion_drop_top_k'))}, as many random channels by "
                f"{_metric(values.get('deletion_drop_random'))}.")
    return f"## Evaluation\n\n| metric | EPIC | raw channels (U = I) |\n| --- | --- | --- |\n{rows}\n\n{deletion}\n"


def _load_line(config: EpicConfig, name: str) -> str:
    if config.base_model_name_or_path:
        return f'explainer = EpicExplainer.from_pretrained("{name}")   # loads the base model too'
    return (f'explainer = EpicExplainer.from_pretrained("{name}", base_model="path/to/the/model")   # the bank was fit '
            "on a local model: pass it (its weights are checked against the fingerprint)")


def model_card(config: EpicConfig, repo_id: str | None = None) -> ModelCard:
    """The card of a bank with ``config``; its usage line names ``repo_id`` when given."""
    fingerprint = config.base_model_fingerprint
    # names as a stranger reads them: a Hub id, or a local folder's own name, never the path on the author's disk
    base = display_name(config.base_model_name_or_path) or (
        f"a local model (weights fingerprint {fingerprint[:12]})" if fingerprint else "unknown")
    dataset = {**(config.dataset or {})}
    if dataset.get("name"):
        dataset["name"] = display_name(dataset["name"])
    data = ModelCardData(library_name="epic_hf", tags=["epic", "explainability", "prototypes", "image-classification"],
                         base_model=_hub_id(base), datasets=[d] if (d := _hub_id(dataset.get("name"))) else None)
    name = repo_id or "path/to/this/bank"
    fit = json.dumps(config.fit.to_dict(), indent=2, sort_keys=True)
    text = f"""
{CARD_START}
# EPIC prototype bank for `{base}`

This repository holds an [EPIC](https://arxiv.org/abs/2505.12897) prototype bank: a learned
disentangling matrix U ({config.matrix}) and, for each of the {config.num_channels} channels of the
model's last feature map, its {config.prototypes_per_channel} most activating training images with their
patches. It explains the frozen classifier `{base}` (revision `{config.base_model_revision or "main"}`)
without changing any of its predictions: every explanation decomposes the model's own logits exactly.

| | |
| --- | --- |
| base model | `{base}` @ `{config.base_model_revision or "main"}` |
| model type | `{config.model_type}` |
| dataset | `{dataset.get('name', 'unknown')}` (split `{dataset.get('split', 'n/a')}`) |
| samples indexed | {config.num_samples if config.num_samples is not None else 'n/a'} |
| purity before (U = I) | {_metric(config.purity_before)} |
| purity after | {_metric(config.purity_after)} |
{_patch_share_row(config)}{_purity_warning(config)}
{_curve(config)}{_evaluation(config)}
## Usage

```python
from epic_hf import EpicExplainer

{_load_line(config, name)}
explanation = explainer.explain("image.jpg")
explanation.save("explained.png")
```

## Fit settings

```json
{fit}
```
{CARD_END}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{text}")
