"""The README model card of an EPIC repo: what it explains, how well, and how to use it."""

from __future__ import annotations

import json
from typing import Any


def _front_matter(config: dict[str, Any]) -> str:
    lines = ["---", "library_name: epic_hf", "tags:"]
    lines += [f"- {tag}" for tag in ("epic", "explainability", "prototypes", "image-classification")]
    base = config.get("base_model_name_or_path")
    if base and "/" in str(base) and not str(base).startswith(("/", ".")):
        lines.append(f"base_model: {base}")
    dataset = (config.get("dataset") or {}).get("name")
    if dataset and "/" in str(dataset) and not str(dataset).startswith(("/", ".")):
        lines += ["datasets:", f"- {dataset}"]
    lines.append("---")
    return "\n".join(lines)


def _metric(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "n/a"


def model_card(config: dict[str, Any], repo_id: str | None = None) -> str:
    """Markdown with YAML front matter the Hub validates (tags, base_model, datasets)."""
    base = config.get("base_model_name_or_path", "unknown")
    revision = config.get("base_model_revision") or "main"
    dataset = config.get("dataset") or {}
    name = repo_id or "<this repo>"
    fit = json.dumps(config.get("fit", {}), indent=2, sort_keys=True)
    return f"""{_front_matter(config)}

# EPIC prototype bank for `{base}`

This repository holds an [EPIC](https://arxiv.org/abs/2505.12897) prototype bank: a learned
disentangling matrix U ({config.get('matrix', 'orthogonal')}) and, for each of the
{config.get('num_channels', '?')} channels of the model's last feature map, its
{config.get('prototypes_per_channel', '?')} most activating training images with their patches.
It explains the frozen classifier `{base}` (revision `{revision}`) without changing any of its
predictions: every explanation decomposes the model's own logits exactly.

| | |
| --- | --- |
| base model | `{base}` @ `{revision}` |
| model type | `{config.get('model_type', '?')}` |
| dataset | `{dataset.get('name', 'unknown')}` (split `{dataset.get('split', 'n/a')}`) |
| samples indexed | {config.get('num_samples', 'n/a')} |
| purity before (U = I) | {_metric(config.get('purity_before'))} |
| purity after | {_metric(config.get('purity_after'))} |

## Usage

```python
from epic_hf import EpicExplainer

explainer = EpicExplainer.from_pretrained("{name}")   # loads the base model too
explanation = explainer.explain("image.jpg")
explanation.save("explained.png")
```

## Fit settings

```json
{fit}
```
"""
