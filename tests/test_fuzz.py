"""Hostile banks, fuzzed: every mutation of a real bank ends in one clear error or in a correct explanation.

A few hundred seeded cases mutate a bank a real fit wrote: its config (truncated, bytes flipped,
fields given absurd or wrong-typed values) and its safetensors file (truncated, bits flipped,
tensors replaced with NaN/inf, absurd shapes, wrong dtypes, hostile thumbnails). Each case loads
the bank onto the explainer it was fit with and explains an image. It must either raise an
``EpicError`` whose message is one line, or give an explanation that still decomposes the
model's own logit exactly and renders. No other exception, no hang (every case is short), and
memory stays within a stated bound.
"""

from __future__ import annotations

import io
import json
import random
import resource
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from epic_hf import EpicError, EpicExplainer, PrototypeBank
from epic_hf.bank_format import CONFIG_NAME, WEIGHTS_NAME
from epic_hf.synthetic import planted_dataset
from tiny_models import save_tiny_model

CASES = 400
#: Growth of the process's peak memory over all cases: a hostile size must never be allocated.
MEMORY_BOUND_MB = 400
HOSTILE_VALUES = [None, -1, 0, 2**70, 1e308, float("nan"), float("inf"), "evil", "", [], {}, [100000, 100000],
                  [0, 0], True, [[1]], "x" * 5000, {"a": 1}, [1, 2, 3]]
CONFIG_FIELDS = ["num_channels", "prototypes_per_channel", "matrix", "grid_size", "input_size", "purity_after",
                 "purity_before", "steps", "evaluation", "fit", "dataset", "base_model_name_or_path",
                 "format_version", "model_type", "condition_number", "num_samples", "format"]
TENSOR_NAMES = ["S", "U", "sample_keys", "scores", "boxes", "thumbnail_keys", "thumbnail_offsets", "thumbnail_data",
                "class_evidence", "class_counts"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    model_dir = save_tiny_model("resnet", root / "model")
    explainer = EpicExplainer.from_pretrained(str(model_dir))
    explainer.fit(planted_dataset(24, size=32), prototypes_per_channel=2, schedule_start=4, schedule_end=2,
                  schedule_steps=2, batch_size=16)
    explainer.save_pretrained(root / "bank")
    image = planted_dataset(1, size=32, seed=9)["image"][0]
    return explainer, root / "bank", image


def _bomb_png(side: int) -> bytes:
    """A PNG whose header claims ``side`` x ``side`` pixels (its data is a few bytes)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = side.to_bytes(4, "big") * 2  # IHDR width and height (the CRC is then wrong, as a forger's may be)
    return bytes(data)


def _mutate_config(path: Path, rng: random.Random) -> str:
    text = path.read_text()
    kind = rng.choice(["field", "field", "field", "truncate", "flip"])
    if kind == "truncate":
        cut = rng.randrange(len(text))
        path.write_text(text[:cut])
        return f"config truncated at {cut}"
    if kind == "flip":
        data = bytearray(text.encode())
        position = rng.randrange(len(data))
        data[position] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        return f"config byte {position} flipped"
    values = json.loads(text)
    name, value = rng.choice(CONFIG_FIELDS), rng.choice(HOSTILE_VALUES)
    if rng.random() < 0.3 and isinstance(values.get("fit"), dict):
        values["fit"][rng.choice(sorted(values["fit"]))] = value
        name = "fit." + name
    else:
        values[name] = value
    path.write_text(json.dumps(values))
    return f"config {name} = {value!r:.40}"


def _mutate_weights(path: Path, rng: random.Random) -> str:
    kind = rng.choice(["truncate", "flip", "flip", "tensor", "tensor", "tensor", "thumbnail"])
    data = path.read_bytes()
    if kind == "truncate":
        cut = rng.randrange(len(data))
        path.write_bytes(data[:cut])
        return f"weights truncated at {cut}"
    if kind == "flip":
        raw = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(raw))
        return "weights bits flipped"
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    if kind == "thumbnail":
        bad = rng.choice([_bomb_png(60000), b"not an image", b""])
        offsets = tensors["thumbnail_offsets"]
        first = bytes(tensors["thumbnail_data"][: int(offsets[1])].numpy().tobytes())
        rest = bytes(tensors["thumbnail_data"][int(offsets[1]):].numpy().tobytes())
        buffer = bad + rest
        tensors["thumbnail_data"] = torch.frombuffer(bytearray(buffer), dtype=torch.uint8).clone() if buffer else \
            torch.zeros(0, dtype=torch.uint8)
        tensors["thumbnail_offsets"] = offsets - len(first) + len(bad)
        tensors["thumbnail_offsets"][0] = 0
        save_file(tensors, str(path), metadata=metadata)
        return f"thumbnail replaced by {bad[:12]!r}"
    name = rng.choice([n for n in TENSOR_NAMES if n in tensors])
    tensor = tensors[name]
    change = rng.choice(["nan", "inf", "huge", "shape", "dtype", "drop"])
    if change in ("nan", "inf", "huge") and tensor.numel():
        tensor = tensor.double().clone()
        tensor.view(-1)[rng.randrange(tensor.numel())] = {"nan": float("nan"), "inf": float("inf"),
                                                          "huge": 1e30}[change]
        tensor = tensor.to(tensors[name].dtype) if tensors[name].is_floating_point() else tensor
    elif change == "shape":
        tensor = torch.zeros(rng.choice([(1,), (3, 3), (tensor.numel() + 1,), (2, 2, 2)]), dtype=tensor.dtype)
    elif change == "dtype":
        tensor = tensor.float() if not tensor.is_floating_point() else tensor.to(torch.int64)
    if change == "drop":
        del tensors[name]
    else:
        tensors[name] = tensor.contiguous()
    save_file(tensors, str(path), metadata=metadata)
    return f"tensor {name}: {change}"


def _one_line(error: BaseException) -> bool:
    return "\n" not in str(error) and "Traceback" not in str(error) and len(str(error)) < 2000


@pytest.mark.slow
def test_every_mutated_bank_is_refused_in_one_line_or_explains_exactly(fitted, tmp_path):
    explainer, bank_dir, image = fitted
    original = explainer.bank
    rng = random.Random(0)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    outcomes = {"refused": 0, "explained": 0}
    for case in range(CASES):
        target = tmp_path / f"case{case}"
        shutil.copytree(bank_dir, target)
        what = (_mutate_config(target / CONFIG_NAME, rng) if rng.random() < 0.45
                else _mutate_weights(target / WEIGHTS_NAME, rng))
        try:
            bank = PrototypeBank.from_pretrained(target)
            explainer.set_bank(bank)
            explanation = explainer.explain(image)
            explanation.to_image()
        except EpicError as error:
            assert _one_line(error), f"case {case} ({what}): {error!r}"
            outcomes["refused"] += 1
        except Exception as error:  # noqa: BLE001 - the point: nothing else may escape
            raise AssertionError(f"case {case} ({what}) raised {type(error).__name__}: {error}") from error
        else:
            total = explanation.contributions.double().sum() + explanation.cls_contribution + explanation.bias
            with torch.no_grad():  # the model's own forward, run here on its own
                own = explainer.model(pixel_values=explainer.preprocess([image])).logits[0]
            logit = own[explanation.target_index].double()
            assert torch.isfinite(explanation.contributions).all(), f"case {case} ({what})"
            assert abs(float(total - logit)) <= 1e-3 * max(1.0, abs(float(logit))), f"case {case} ({what})"
            outcomes["explained"] += 1
        finally:
            explainer.set_bank(original)
            shutil.rmtree(target)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - peak_before
    assert grown < MEMORY_BOUND_MB, f"peak memory grew by {grown:.0f} MB over {CASES} cases"
    assert outcomes["refused"] > CASES // 3 and outcomes["explained"] > 0, outcomes
