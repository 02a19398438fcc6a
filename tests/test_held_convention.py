"""The held split's convention: a token's part is what its centred, normalised stream carries.

Every bias and LayerNorm beta is the model's constant (``cls_contribution``), never a token's part.
A float64 ViT is split here by a reference written from the formulas (its own forward, its own
loops over layers, tokens and heads), independent of the engine; the other held families are held
to the convention through what it implies: moving the value bias into the output bias (the model's
function unchanged) moves no part, and a token whose centred stream is zero carries nothing.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoModelForImageClassification, ViTConfig, ViTForImageClassification

from epic_hf.adapters import adapter_for
from epic_hf.adapters.held import HeldBlock
from tiny_models import TINY_MODELS, make_tiny_model, model_logits

#: tiny transformers models whose adapters run the held split (DINOv2 through split_cls)
HELD_TINY = ["vit", "vit_msn", "deit", "deit-teacher", "cvt", "pvt", "dinov2", "dinov2_with_registers"]
#: tiny timm token ViTs: plain, with registers and layer scale, distilled (two heads)
HELD_TIMM = ["vit_token", "vit_token_regs_scaled", "deit_distilled"]


def _random_vit(layers: int = 3, seed: int = 0) -> ViTForImageClassification:
    """A float64 ViT with every bias and LayerNorm gamma and beta random and non-zero (init sets them to 0 and 1)."""
    torch.manual_seed(seed)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                       intermediate_size=32, num_labels=3)
    model = ViTForImageClassification(config).double().eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.copy_(torch.randn_like(parameter) * 0.5)
            elif "layernorm" in name:  # the gammas
                parameter.copy_(1.0 + torch.randn_like(parameter) * 0.3)
        model.vit.embeddings.cls_token.add_(torch.randn_like(model.vit.embeddings.cls_token))
        model.vit.embeddings.position_embeddings.add_(torch.randn_like(model.vit.embeddings.position_embeddings) * 0.3)
    return model


def _pixels(batch: int = 2, size: int = 32, seed: int = 3) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _ln_parts(norm: nn.LayerNorm, stream: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, mean)`` of one token's stream (D,) under ``norm``: ``LN(h) = gamma * s * (h - mean) + beta``."""
    mean = stream.mean()
    return 1.0 / torch.sqrt(((stream - mean) ** 2).mean() + norm.eps), mean


def _reference(model: ViTForImageClassification, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's split by the formulas: (patch parts after the final norm (N, D), CLS part + constant (D,), logits).

    Its own forward of every token (checked against the model's logits by the caller); the CLS stream
    kept as ``sum_j C[j] + c``; token j's attention term ``sum_h a_hj W_O^h W_V^h (gamma_1 s_j centre(h_j))``;
    every bias and beta, and ``W_V beta_1`` (weighted by attention that sums to 1), added to c.
    """
    vit = model.vit
    h = vit.embeddings(image.unsqueeze(0))[0]  # (T, D), the CLS first
    tokens, width = h.shape
    parts = torch.zeros_like(h)
    parts[0] = h[0]
    const = torch.zeros(width, dtype=h.dtype)

    def centre(v: torch.Tensor) -> torch.Tensor:
        return v - v.mean(dim=-1, keepdim=True)

    for layer in vit.layers:
        attention, mlp = layer.attention, layer.mlp
        heads = attention.num_attention_heads
        size = width // heads
        ln1 = layer.layernorm_before
        normalised = torch.zeros_like(h)  # gamma_1 * s_j * centre(h_j), per token
        for j in range(tokens):
            s, mean = _ln_parts(ln1, h[j])
            normalised[j] = ln1.weight * s * (h[j] - mean)
        ln_out = normalised + ln1.bias
        q = ln_out @ attention.q_proj.weight.T + attention.q_proj.bias
        k = ln_out @ attention.k_proj.weight.T + attention.k_proj.bias
        v = ln_out @ attention.v_proj.weight.T + attention.v_proj.bias
        w_v, w_o = attention.v_proj.weight, attention.o_proj.weight
        s_cls, _ = _ln_parts(ln1, h[0])
        new_parts, new_const = parts.clone(), const.clone()
        attended = torch.zeros(tokens, width, dtype=h.dtype)
        for head in range(heads):
            cols = slice(head * size, (head + 1) * size)
            scores = q[:, cols] @ k[:, cols].T / size ** 0.5  # (T, T)
            weights = torch.softmax(scores, dim=-1)
            attended[:, cols] = weights @ v[:, cols]
            a = weights[0]  # the CLS row
            for j in range(1, tokens):  # another token: its centred, normalised stream
                new_parts[j] += a[j] * w_o[:, cols] @ (w_v[cols] @ normalised[j])
            for i in range(tokens):  # the CLS's own value, through each of its parts
                new_parts[i] += a[0] * w_o[:, cols] @ (w_v[cols] @ (ln1.weight * s_cls * centre(parts[i])))
            new_const += a[0] * w_o[:, cols] @ (w_v[cols] @ (ln1.weight * s_cls * centre(const)))
        new_const += w_o @ (w_v @ ln1.bias + attention.v_proj.bias) + attention.o_proj.bias
        parts, const = new_parts, new_const
        h = h + attended @ w_o.T + attention.o_proj.bias
        torch.testing.assert_close(parts.sum(0) + const, h[0], rtol=0, atol=1e-10)

        ln2 = layer.layernorm_after
        s2, mean2 = _ln_parts(ln2, h[0])
        z = mlp.fc1.weight @ (ln2.weight * s2 * (h[0] - mean2) + ln2.bias) + mlp.fc1.bias
        gate = torch.nn.functional.gelu(z) / z
        parts = parts + torch.stack([mlp.fc2.weight @ (gate * (mlp.fc1.weight @ (ln2.weight * s2 * centre(p))))
                                     for p in parts])
        const = const + mlp.fc2.weight @ (gate * (mlp.fc1.weight @ (ln2.weight * s2 * centre(const) + ln2.bias)
                                                  + mlp.fc1.bias)) + mlp.fc2.bias
        every = torch.stack([ln2.weight * _ln_parts(ln2, row)[0] * (row - row.mean()) + ln2.bias for row in h])
        h = h + torch.nn.functional.gelu(every @ mlp.fc1.weight.T + mlp.fc1.bias) @ mlp.fc2.weight.T + mlp.fc2.bias
        torch.testing.assert_close(parts.sum(0) + const, h[0], rtol=0, atol=1e-10)

    final = vit.layernorm
    s_f, mean_f = _ln_parts(final, h[0])
    out_parts = torch.stack([final.weight * s_f * centre(p) for p in parts])
    out_const = final.weight * s_f * centre(const) + final.bias
    logits = model.classifier(final.weight * s_f * (h[0] - mean_f) + final.bias)
    return out_parts[1:], out_parts[0] + out_const, logits


@torch.no_grad()
def test_the_split_of_a_random_vit_is_the_one_the_formulas_give():
    model = _random_vit()
    pixels = _pixels()
    adapter = adapter_for(model)
    features = adapter.features(pixels)
    own = model(pixel_values=pixels).logits
    head = model.classifier
    for b in range(pixels.shape[0]):
        patches, rest, logits = _reference(model, pixels[b])
        torch.testing.assert_close(logits, own[b], rtol=0, atol=1e-10)  # the reference's forward is the model's
        cells = patches.shape[0]
        fmap = features.fmap[b].flatten(1).T / cells  # (N, D): each patch's part, row-major
        torch.testing.assert_close(fmap, patches, rtol=0, atol=1e-10)
        torch.testing.assert_close(features.extra_logits[b], rest @ head.weight.T, rtol=0, atol=1e-10)
        total = head.weight @ patches.sum(0) + features.extra_logits[b] + head.bias
        torch.testing.assert_close(total, own[b], rtol=0, atol=1e-10)
    pooled = adapter.pooled_features(pixels)  # only the CLS tracked: the same split, summed
    torch.testing.assert_close(pooled.pooled, features.fmap.mean(dim=(2, 3)), rtol=0, atol=1e-10)
    torch.testing.assert_close(pooled.extra_logits, features.extra_logits, rtol=0, atol=1e-10)


def _value_bias(block: HeldBlock) -> torch.Tensor:
    """The value projection's bias, a view into the model's parameter (timm fuses q, k and v in one Linear)."""
    if "v" in block.qkv:
        return block.qkv["v"].bias
    fused = block.qkv["qkv"].bias
    return fused[2 * fused.shape[0] // 3:]


def _blocks(adapter) -> list[HeldBlock]:
    """The held blocks an adapter splits: its own stack, or its timm token ViT's."""
    token_vit = getattr(adapter, "token_vit", None)
    return (token_vit.stack if token_vit is not None else adapter.stack).blocks


def _move_value_bias_into_output_bias(adapter) -> None:
    """``b_O += W_O b_V; b_V = 0`` in every held block: the attention weights sum to 1, so the model's function
    is unchanged, but a convention that credits ``a_hj v_j`` whole would move ``a_hj W_O b_V`` off the tokens."""
    for block in _blocks(adapter):
        bias = _value_bias(block)
        block.out.bias.add_(block.out.weight @ bias)
        bias.zero_()


def _zero_first_norm_gammas(adapter) -> None:
    """gamma_1 = 0 in every held block: every token's centred, normalised stream is zero at every block."""
    for block in _blocks(adapter):
        block.norm1.weight.zero_()


def _split_channels(name: str, adapter, fmap: torch.Tensor) -> torch.Tensor:
    """The channels of F that the held split makes (DINOv2 split_cls: the second half; the first is the tokens)."""
    return fmap[:, fmap.shape[1] // 2:] if name.startswith("dinov2") else fmap


def _tiny_adapter(name: str):
    model = make_tiny_model(name).double()
    return model, adapter_for(model, split_cls=True) if name.startswith("dinov2") else adapter_for(model)


def _tiny_pixels(name: str) -> torch.Tensor:
    return _pixels(size=TINY_MODELS[name].image_size)


@pytest.mark.parametrize("name", HELD_TINY)
@torch.no_grad()
def test_moving_the_value_bias_into_the_output_bias_moves_no_part(name):
    model, adapter = _tiny_adapter(name)
    pixels = _tiny_pixels(name)
    before, logits = adapter.features(pixels), model_logits(model, pixels)
    moved_model, moved = _tiny_adapter(name)
    _move_value_bias_into_output_bias(moved)
    torch.testing.assert_close(model_logits(moved_model, pixels), logits, rtol=0, atol=1e-10)
    after = moved.features(pixels)
    torch.testing.assert_close(after.fmap, before.fmap, rtol=0, atol=1e-10)
    torch.testing.assert_close(after.extra_logits, before.extra_logits, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", HELD_TINY)
@torch.no_grad()
def test_tokens_with_zero_centred_streams_carry_nothing(name):
    """gamma_1 = 0: every value is the model's constant (for CvT one that differs at the key/value grid's
    border), so the patches' parts are zero and the whole logit is the extra term; the split stays exact."""
    model, adapter = _tiny_adapter(name)
    _zero_first_norm_gammas(adapter)
    pixels = _tiny_pixels(name)
    features = adapter.features(pixels)
    assert _split_channels(name, adapter, features.fmap).abs().max() < 1e-12
    assert features.extra_logits.abs().max() > 1e-3
    head = adapter.head()
    total = features.fmap.mean(dim=(2, 3)) @ head.weight.T.to(pixels) + features.extra_logits + head.bias.to(pixels)
    torch.testing.assert_close(total, model_logits(model, pixels), rtol=0, atol=1e-10)


@torch.no_grad()
def test_moving_ln1_beta_into_the_projection_biases_moves_no_part():
    """``beta_1' = 0``, ``b' = b + W beta_1`` for the queries, keys and values: the same model, the same parts."""
    model, pixels = _random_vit(), _pixels()
    before = adapter_for(model).features(pixels)
    moved = copy.deepcopy(model)
    for layer in moved.vit.layers:
        beta = layer.layernorm_before.bias
        for projection in (layer.attention.q_proj, layer.attention.k_proj, layer.attention.v_proj):
            projection.bias.add_(projection.weight @ beta)
        beta.zero_()
    torch.testing.assert_close(moved(pixel_values=pixels).logits, model(pixel_values=pixels).logits,
                               rtol=0, atol=1e-10)
    after = adapter_for(moved).features(pixels)
    torch.testing.assert_close(after.fmap, before.fmap, rtol=0, atol=1e-10)
    torch.testing.assert_close(after.extra_logits, before.extra_logits, rtol=0, atol=1e-10)


@torch.no_grad()
def test_a_patch_whose_embedding_is_constant_carries_nothing_through_one_block():
    """A patch token whose stream into the first block is the same in every channel (centre 0) adds no
    attention term there; with one block, nothing else can give it a part, so its cell of F is zero."""
    model, pixels = _random_vit(layers=1), _pixels()
    flat = 5  # token 5, patch 4

    def flatten(_module: nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        output[:, flat] = output[:, flat].mean(dim=-1, keepdim=True) + 0.7
        return output

    handle = model.vit.embeddings.register_forward_hook(flatten)
    try:
        features = adapter_for(model).features(pixels)
        logits = model(pixel_values=pixels).logits
    finally:
        handle.remove()
    cells = features.fmap.flatten(2)  # (B, D, N), row-major
    assert cells[:, :, flat - 1].abs().max() < 1e-12
    others = torch.cat([cells[:, :, :flat - 1], cells[:, :, flat:]], dim=-1)
    assert others.abs().amax(dim=1).min() > 1e-5  # every other patch carries a part
    total = features.fmap.mean(dim=(2, 3)) @ model.classifier.weight.T + features.extra_logits + model.classifier.bias
    torch.testing.assert_close(total, logits, rtol=0, atol=1e-10)


@pytest.fixture(scope="module", params=HELD_TIMM)
def timm_repo(request, tmp_path_factory) -> tuple[str, Path]:
    pytest.importorskip("timm")
    from tiny_timm import save_tiny_timm

    return request.param, save_tiny_timm(request.param, tmp_path_factory.mktemp(request.param))


def _timm_adapter(path: Path):
    model = AutoModelForImageClassification.from_pretrained(str(path)).double().eval()
    return model, adapter_for(model)


@torch.no_grad()
def test_timm_token_vits_move_no_part_with_the_value_bias(timm_repo):
    from tiny_timm import IMAGE_SIZE

    _, path = timm_repo
    pixels = _pixels(size=IMAGE_SIZE)
    model, adapter = _timm_adapter(path)
    before, logits = adapter.features(pixels), model(pixel_values=pixels).logits
    moved_model, moved = _timm_adapter(path)
    _move_value_bias_into_output_bias(moved)
    torch.testing.assert_close(moved_model(pixel_values=pixels).logits, logits, rtol=0, atol=1e-10)
    after = moved.features(pixels)
    torch.testing.assert_close(after.fmap, before.fmap, rtol=0, atol=1e-10)
    torch.testing.assert_close(after.extra_logits, before.extra_logits, rtol=0, atol=1e-10)


@torch.no_grad()
def test_timm_token_vits_with_zero_centred_streams_give_the_patches_nothing(timm_repo):
    from tiny_timm import IMAGE_SIZE

    _, path = timm_repo
    pixels = _pixels(size=IMAGE_SIZE)
    model, adapter = _timm_adapter(path)
    _zero_first_norm_gammas(adapter)
    features = adapter.features(pixels)
    assert features.fmap.abs().max() < 1e-12 and features.extra_logits.abs().max() > 1e-3
    head = adapter.head()
    total = features.fmap.mean(dim=(2, 3)) @ head.weight.T.to(pixels) + features.extra_logits + head.bias.to(pixels)
    torch.testing.assert_close(total, model(pixel_values=pixels).logits, rtol=0, atol=1e-10)
