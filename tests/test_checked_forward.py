"""Exact by check, not by construction: every batch's decomposition is held against the model's own forward.

Each test reproduces a way the decomposition and the model used to part silently: a hook added to
the classifier after loading, a model left in train mode, an ambient autocast, two threads on one
model, two forwards in one held context. Exactness is always judged against the model's own
forward, run here independently, never against ``explanation.logits``.
"""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from PIL import Image
from tiny_models import make_tiny_model, model_logits, processor_for

from epic_hf import EpicExplainer
from epic_hf.adapters.held import held_linearisation
from epic_hf.errors import DecompositionError, EpicError
from epic_hf.synthetic import planted_dataset

FAMILIES = ["resnet", "vit"]


def noise_images(count: int, seed: int = 0, size: int = 40) -> list[Image.Image]:
    generator = torch.Generator().manual_seed(seed)
    return [Image.fromarray((torch.rand(size, size, 3, generator=generator) * 255).to(torch.uint8).numpy())
            for _ in range(count)]


def explainer_for(name: str) -> EpicExplainer:
    return EpicExplainer(make_tiny_model(name), processor_for(name))


def reference_logits(explainer: EpicExplainer, images: list[Image.Image], model: torch.nn.Module | None = None
                     ) -> torch.Tensor:
    """The logits of an independent eval-mode copy of the model (or of ``model``), on the explainer's inputs."""
    pixel_values = explainer.preprocess(images)
    reference = copy.deepcopy(model if model is not None else explainer.model).eval()
    with torch.no_grad():
        return model_logits(reference, pixel_values).float()


def assert_terms_are_the_logits(explanation, expected: torch.Tensor, rtol: float = 1e-4) -> None:
    total = float(explanation.contributions.sum()) + explanation.cls_contribution + explanation.bias
    scale = float(expected.abs().max())
    assert abs(total - float(expected[explanation.target_index])) <= rtol * scale
    torch.testing.assert_close(explanation.logits, expected, rtol=rtol, atol=rtol * scale)


# -- a model changed after loading ----------------------------------------------------------------------
@pytest.mark.parametrize("name", FAMILIES)
def test_a_hook_on_the_classifier_is_caught_not_explained(name):
    explainer = explainer_for(name)
    image = noise_images(1)[0]
    before = explainer.explain(image)
    assert_terms_are_the_logits(before, reference_logits(explainer, [image])[0])
    handle = explainer.model.classifier.register_forward_hook(lambda _m, _a, out: out + 1.0)
    try:
        with pytest.raises(DecompositionError) as caught:
            explainer.explain(image)
    finally:
        handle.remove()
    error = caught.value
    assert isinstance(error, EpicError)
    assert error.model_type == name and error.tolerance == pytest.approx(1e-4)
    # +1 on every logit: the gap is 1 relative to the largest |logit| of the hooked model
    hooked_max = float(before.logits.abs().max())
    assert error.gap == pytest.approx(1.0 / max(abs(hooked_max - 1.0), abs(hooked_max + 1.0), 1.0), rel=0.5)
    assert name in str(error) and "tolerance" in str(error)
    explainer.explain(image)  # the hook gone, the model is explained again


def double_last_hidden_state(_module, _args, output):
    return output.__class__(**{**output, "last_hidden_state": output.last_hidden_state * 2.0})


def test_a_model_that_returns_nan_is_refused_in_one_clear_line():
    explainer = explainer_for("resnet")
    handle = explainer.model.classifier.register_forward_hook(lambda _m, _a, out: out * float("nan"))
    try:
        with pytest.raises(DecompositionError, match="not a finite number") as caught:
            explainer.explain(noise_images(1)[0])
    finally:
        handle.remove()
    assert "\n" not in str(caught.value)


def test_a_hook_that_changes_the_feature_map_is_explained_as_the_model_now_computes():
    """F is read from the model's own forward, after the user's hooks: the decomposition follows the model."""
    explainer = explainer_for("resnet")
    image = noise_images(1, seed=3)[0]
    handle = explainer.model.resnet.encoder.register_forward_hook(double_last_hidden_state)
    try:
        explanation = explainer.explain(image)
        expected = reference_logits(explainer, [image])[0]  # the deep copy keeps the hook
    finally:
        handle.remove()
    assert_terms_are_the_logits(explanation, expected)
    assert not torch.allclose(expected, reference_logits(explainer, [image])[0])  # the hook did change the model


def test_a_hook_that_parts_the_map_from_the_pooled_vector_is_caught():
    """ResNetModel pools inside itself: doubling only its returned map leaves the logits as they were, so the
    map EPIC reads no longer feeds the head, and the check says so."""
    explainer = explainer_for("resnet")
    handle = explainer.model.resnet.register_forward_hook(double_last_hidden_state)
    try:
        with pytest.raises(DecompositionError, match="resnet"):
            explainer.explain(noise_images(1, seed=3)[0])
    finally:
        handle.remove()


# -- explaining never changes the model ----------------------------------------------------------------
@pytest.mark.parametrize("name", FAMILIES)
def test_a_model_in_train_mode_is_explained_in_eval_mode_and_left_as_it_was(name):
    explainer = explainer_for(name)
    images = noise_images(3, seed=1)
    expected = reference_logits(explainer, images)  # an eval-mode copy
    model = explainer.model
    model.train()
    model.classifier.eval()  # mixed flags must come back as they were, not all True
    flags = {module_name: module.training for module_name, module in model.named_modules()}
    state = {key: value.clone() for key, value in model.state_dict().items()}
    grads = {key: parameter.requires_grad for key, parameter in model.named_parameters()}
    explanations = explainer.explain(images)
    for explanation, logits in zip(explanations, expected):
        assert_terms_are_the_logits(explanation, logits)
    assert {module_name: module.training for module_name, module in model.named_modules()} == flags
    after = model.state_dict()
    assert after.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(after[key], value), f"{key} changed"
    assert {key: p.requires_grad for key, p in model.named_parameters()} == grads
    assert all(parameter.grad is None for parameter in model.parameters())


def test_the_batchnorm_statistics_a_train_mode_forward_would_change_stay_put():
    """The reproduction of the report: in train mode a plain forward moves the BatchNorm buffers; explain does not."""
    explainer = explainer_for("resnet")
    model = explainer.model.train()
    buffers = {key: value.clone() for key, value in model.named_buffers()}
    explainer.explain(noise_images(2, seed=5))
    assert all(torch.equal(buffers[key], value) for key, value in model.named_buffers())
    with torch.no_grad():
        model(pixel_values=explainer.preprocess(noise_images(2, seed=5)))
    assert any(not torch.equal(buffers[key], value) for key, value in model.named_buffers())  # the test could fail


# -- precision ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FAMILIES)
def test_an_ambient_bfloat16_autocast_is_explained_within_its_tolerance(name):
    explainer = explainer_for(name)
    images = noise_images(2, seed=2)
    full = explainer.explain(images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reduced = explainer.explain(images)
        pixel_values = explainer.preprocess(images)
        with torch.no_grad():
            expected = model_logits(explainer.model, pixel_values).float()
    for low, high, logits in zip(reduced, full, expected):
        assert low.contributions.dtype == torch.float64  # the decomposition's own arithmetic is not bfloat16
        assert_terms_are_the_logits(low, logits, rtol=5e-2)
        scale = float(high.logits.abs().max())
        torch.testing.assert_close(low.logits, high.logits, rtol=5e-2, atol=5e-2 * scale)
        torch.testing.assert_close(low.contributions.float(), high.contributions.float(), rtol=0.1,
                                   atol=5e-2 * scale)


def test_the_held_split_keeps_float32_parts_under_a_bfloat16_autocast():
    """The split's own products run outside the autocast: its parts are float32 whatever the forward runs in."""
    explainer = explainer_for("vit")
    pixel_values = explainer.preprocess(noise_images(2))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        with held_linearisation(explainer.classifier.adapter.stack) as tokens:
            logits = explainer.model(pixel_values=pixel_values).logits
    assert logits.dtype == torch.bfloat16  # the forward itself did run in bfloat16
    assert tokens[0].parts.dtype == torch.float32 and tokens[0].const.dtype == torch.float32


BF16_FIT = """
import torch
from epic_hf import EpicExplainer
from epic_hf.synthetic import planted_dataset, tiny_resnet

model, processor = tiny_resnet(3, (8, 8), seed=1)
explainer = EpicExplainer(model.eval(), processor)
data = planted_dataset(24, num_classes=3, size=32, seed=1)
report = explainer.fit(data, prototypes_per_channel=2, schedule_start=4, schedule_end=2, schedule_steps=1,
                       mixed_precision="bf16", batch_size=8)
assert report.purity_after == report.purity_after, "purity is NaN"
image = data[0]["image"]
explanation = explainer.explain(image)
with torch.no_grad():
    own = model(pixel_values=explainer.preprocess([image])).logits[0]
total = float(explanation.contributions.sum()) + explanation.bias
assert abs(total - float(own[explanation.target_index])) <= 1e-4 * float(own.abs().max()), (total, own)
print("bf16 fit ok")
"""


@pytest.mark.slow
def test_a_fit_in_bfloat16_is_checked_batch_by_batch_and_gives_a_bank():
    """accelerate's precision is process-wide (AcceleratorState), so the fit runs in a process of its own."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", BF16_FIT], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "bf16 fit ok" in result.stdout


# -- threads ---------------------------------------------------------------------------------------------
def test_two_threads_explaining_one_vit_get_the_serial_answers():
    explainer = explainer_for("vit")
    batches = [noise_images(2, seed=seed) for seed in range(6)]
    serial = [explainer.explain(batch) for batch in batches]
    errors: list[BaseException] = []
    results: dict[tuple[int, int], list] = {}
    start = threading.Barrier(2)

    def work(worker: int) -> None:
        try:
            start.wait()
            for round_ in range(3):
                for index, batch in enumerate(batches):
                    results[(worker, round_ * len(batches) + index)] = explainer.explain(batch)
        except BaseException as error:  # noqa: BLE001 - reported below, with the thread's traceback lost otherwise
            errors.append(error)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert len(results) == 2 * 3 * len(batches)
    for (_, step), explanations in results.items():
        for got, want in zip(explanations, serial[step % len(batches)]):
            torch.testing.assert_close(got.contributions, want.contributions)
            assert got.cls_contribution == pytest.approx(want.cls_contribution, rel=1e-6, abs=1e-9)


def test_a_second_forward_inside_one_held_context_is_an_error():
    explainer = explainer_for("vit")
    adapter = explainer.classifier.adapter
    pixel_values = explainer.preprocess(noise_images(1))
    with torch.no_grad(), held_linearisation(adapter.stack) as tokens:
        explainer.model(pixel_values=pixel_values)
        assert len(tokens) == 1
        with pytest.raises(RuntimeError, match="second forward"):
            explainer.model(pixel_values=pixel_values)


@pytest.mark.slow
def test_the_app_serving_while_a_notebook_explains_one_vit(tmp_path):
    """The app's worker thread and the caller's thread share one model: both get exact answers."""
    import os

    from epic_hf.app import AppUnavailableError, import_gradio

    try:
        import_gradio()
    except AppUnavailableError:
        if os.environ.get("CI"):
            raise
        pytest.skip("gradio is not installed (the app extra)")
    import socket

    from gradio_client import Client, handle_file

    explainer = explainer_for("vit")
    explainer.fit(planted_dataset(24, num_classes=3, size=32, seed=4), prototypes_per_channel=2, schedule_start=4,
                  schedule_end=2, schedule_steps=1)
    uploads = noise_images(3, seed=7)
    paths = []
    for index, image in enumerate(uploads):
        paths.append(tmp_path / f"upload{index}.png")
        image.save(paths[-1])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    served = explainer.launch(host="127.0.0.1", port=port, block=False)
    errors: list[BaseException] = []
    answers: list[str] = []

    def serve_requests() -> None:
        try:
            client = Client(served.local_url, verbose=False)
            for path in paths * 2:
                label, *_ = client.predict(handle_file(str(path)), "the predicted class", 2, api_name="/explain")
                answers.append(label["label"])
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    try:
        thread = threading.Thread(target=serve_requests)
        thread.start()
        expected = reference_logits(explainer, uploads)
        for _ in range(4):
            for explanation, logits in zip(explainer.explain(uploads), expected):
                assert_terms_are_the_logits(explanation, logits)
        thread.join(timeout=300)
    finally:
        served.close()
    assert not errors, errors
    assert answers == [explainer.id2label[int(logits.argmax())] for logits in expected] * 2


def test_the_read_out_refuses_splits_and_heads_that_do_not_pair_up():
    """One split per read-out head: an extra split (a second forward's) is an error, not cut off by zip."""
    from epic_hf.adapters.vit import read_parts, read_pooled

    explainer = explainer_for("vit")
    adapter = explainer.classifier.adapter
    pixel_values = explainer.preprocess(noise_images(1))
    with torch.no_grad(), held_linearisation(adapter.stack) as tokens:
        explainer.model(pixel_values=pixel_values)
    grid = explainer.classifier.forward(pixel_values).pooled.grid
    weights = adapter._weights()
    read_parts(tokens, weights, grid)  # paired: fine
    with pytest.raises(ValueError):
        read_parts(tokens * 2, weights, grid)
    with pytest.raises(ValueError):
        read_pooled(tokens * 2, weights, grid)


def test_a_true_label_spelt_as_a_folder_name_is_the_models_label():
    explainer = explainer_for("resnet")  # labels: circle, square, triangle
    explanation = explainer.explain(noise_images(1)[0], true_label="Circle")
    assert explanation.true_label == "circle"
    assert explainer.explain(noise_images(1)[0], true_label="hexagon").true_label == "hexagon"
