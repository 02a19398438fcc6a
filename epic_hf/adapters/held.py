"""The held linearisation: a CLS-token transformer's logits as an exact sum over its tokens, per image.

A pre-norm transformer (ViT, DeiT, timm's VisionTransformer) reads its logits from the final CLS
token alone, so there is no spatial mean to decompose. But for ONE image, with its own LayerNorm
scales, attention weights and activation gates held at the values they take, every step from the
tokens to the logit is linear:

* LayerNorm, its per-token scale ``s = 1/sqrt(var + eps)`` held: ``LN(v) = gamma * s * centre(v) + beta``;
* the CLS row of attention, weights ``a_hj`` held: ``sum_h sum_j a_hj V_h(LN1(h_j))``;
* the MLP, the gate ``g = act(z) / z`` held: ``W2 (g * z) + b2``, linear in its input.

So the CLS stream is kept as a sum of per-token parts, ``x_cls = sum_j C[j] + const``: C[cls] starts
as the CLS embedding; at each block token j's attention term is added to C[j], while the CLS's
attention to itself and the MLP act on every part through their held linear maps. After the final
norm, ``logit = W . sum_j lin_f(C[j]) + W . const' + b``, an identity (not an approximation) for that
image. The patch tokens' parts are the spatial map F; the prefix tokens' parts (CLS, distillation,
registers) and the constants are not spatial and travel as the exact extra logit term.

The convention: a token's part is what its centred, normalised stream carries, and every bias and
LayerNorm beta is the constant. Token j's attention term is ``sum_h a_hj W_O^h W_V^h (gamma_1 * s_j *
centre(h_j))``, not the whole message ``a_hj v_j``: the value bias, ``W_V beta_1`` (their weighted sum
over the tokens is ``W_V beta_1 + b_V`` whatever the weights, which sum to 1), the output bias, the MLP's
biases and ``W_1 beta_2`` all go to ``const``. Why: those constants are what the model adds to every
image; credited to the tokens in proportion to their attention, they would inflate the patches' share
with evidence no patch holds, a token with a zero centred stream would still carry a part, and the
parts would change when a bias moves between LN1's beta, the value bias and the output bias (the same
model). Where a convolution makes the key/value sources (CvT), the constant is that convolution of
``beta_1`` at each source (:attr:`HeldBlock.value_offset`).

The engine runs inside the model's own forward, through hooks: the token streams, the keys and
values are the model's (whatever attention kernel it uses), and each block's update runs as the
block finishes, so memory stays O(batch x tokens x width). It costs about 20 T D^2 multiply-adds per
block and stream (T tokens of width D) on top of the forward's 24 T D^2 + 4 T^2 D.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .exactness import full_precision

#: The gate of an activation at exactly 0, where ``act(z) / z`` is undefined. Any value is exact
#: there (the parts of z sum to 0, and ``g * 0 = act(0) = 0`` for GELU, ReLU, SiLU, QuickGELU).
GATE_AT_ZERO = 0.5


@dataclass
class HeldBlock:
    """One pre-norm block, ``h += ls1 * attn(norm1(h)); h += ls2 * mlp(norm2(h))``, and where to read it.

    ``qkv`` is what to hook for the queries, keys and values: a dict with the three projection
    modules ``{"q": .., "k": .., "v": ..}`` (outputs (B, T, H*d)), or ``{"qkv": ..}`` for one fused
    projection (output (B, T, 3*H*d), q then k then v). ``value`` is the value projection's
    (weight (H*d, D), bias (H*d,)), ``out`` the output projection. The hooked values are the model's;
    ``value``, ``norm1``'s beta and ``value_offset`` say which part of each is the constant.
    """

    module: nn.Module
    norm1: nn.LayerNorm
    qkv: dict[str, nn.Module]
    value: tuple[torch.Tensor, torch.Tensor]
    out: nn.Linear
    heads: int
    scale: float
    norm2: nn.LayerNorm
    fc1: nn.Linear
    act: Callable[[torch.Tensor], torch.Tensor]
    fc2: nn.Linear
    scale1: torch.Tensor | None = None  # layer scale of the attention branch (D,), or None
    scale2: torch.Tensor | None = None  # layer scale of the MLP branch
    #: What the value projection's input holds, at each key/value source, that no token's centred stream
    #: carries: ``beta_1 (D,) -> (S, D)``, source 0 first. None where every source is one token's LN1 output
    #: (``v_j = W_V LN1(h_j) + b_V``), so that it is ``beta_1`` at every source. CvT's sources are a
    #: convolution of the LN1 map: there it is that convolution (and its BatchNorm) of a map of ``beta_1``.
    value_offset: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass
class HeldStack:
    """The blocks in order, the final norm, and the tokens the head reads (``readouts``, e.g. (0,) or (0, 1))."""

    blocks: list[HeldBlock]
    final_norm: nn.LayerNorm
    readouts: tuple[int, ...] = (0,)


@dataclass
class TokenParts:
    """One read-out token after the final norm, split exactly: ``total = parts.sum(1) + rest + const``.

    ``parts`` (B, P, D): token j's share ``gamma_f * s_f * centre(C[j])`` for the P tracked tokens (all
    of them, or the leading ``track`` ones); ``const`` (B, D): the biases' share plus ``beta_f``;
    ``total`` (B, D): the normed token itself, so that the untracked tokens' summed share is
    ``total - parts.sum(1) - const`` (zero when every token is tracked).
    """

    parts: torch.Tensor
    const: torch.Tensor
    total: torch.Tensor

    @property
    def untracked(self) -> torch.Tensor:
        """The summed share of the tokens that were not tracked one by one (B, D)."""
        return self.total - self.parts.sum(dim=1) - self.const


@dataclass
class _Stream:
    """The running split of one read-out token's residual stream: ``x = C.sum(1) + const``."""

    token: int
    parts: torch.Tensor  # (B, T, D)
    const: torch.Tensor  # (B, D)


@dataclass
class _Run:
    readouts: tuple[int, ...]
    track: int | None
    streams: list[_Stream] = field(default_factory=list)
    captured: dict[str, torch.Tensor] = field(default_factory=dict)
    block_input: torch.Tensor | None = None
    final: list[TokenParts] = field(default_factory=list)


def _held_norm(norm: nn.LayerNorm, x: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """LayerNorm at ``x`` (B, D) as (its linear part, applicable to (B, ..., D) parts, and its constant (B, D))."""
    scale = torch.rsqrt(x.var(dim=-1, unbiased=False) + norm.eps)  # (B,)
    gamma = _weight(norm.weight, x, 1.0)
    beta = _weight(norm.bias, x, 0.0)

    def linear(parts: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * (parts.ndim - 1)
        return (parts - parts.mean(dim=-1, keepdim=True)) * scale.view(shape) * gamma

    return linear, beta.expand_as(x)


def _weight(parameter: torch.Tensor | None, like: torch.Tensor, default: float, size: int | None = None) -> torch.Tensor:
    """A parameter in the dtype and device the decomposition computes in (float64 for a float64 model,
    else float32), or a constant vector where the module has none."""
    if parameter is None:
        return torch.full((size or like.shape[-1],), default, dtype=like.dtype, device=like.device)
    return parameter.detach().to(dtype=like.dtype, device=like.device)


def activation_gate(act: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """``act(z) / z``, the activation as a held per-unit gain (``GATE_AT_ZERO`` where z is exactly 0).

    The activation runs on a copy: timm builds its activations with ``inplace=True``.
    """
    zero = z == 0
    activated = act(z.clone())
    return torch.where(zero, torch.full_like(z, GATE_AT_ZERO), activated / torch.where(zero, torch.ones_like(z), z))


def _layer_scale(scale: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return x if scale is None else x * _weight(scale, x, 1.0)


def _queries_keys_values(block: HeldBlock, captured: dict[str, torch.Tensor],
                         dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """The hooked projections as (B, H, T, d) queries, keys and values in ``dtype``."""
    if "qkv" in captured:
        q, k, v = captured["qkv"].to(dtype).chunk(3, dim=-1)
    else:
        q, k, v = (captured[name].to(dtype) for name in ("q", "k", "v"))
    return tuple(t.reshape(t.shape[0], t.shape[1], block.heads, -1).transpose(1, 2) for t in (q, k, v))


def _value_constant(block: HeldBlock, x: torch.Tensor, sources: int) -> torch.Tensor:
    """What every bias and LN1's beta put into each source's value: (1, H*d), the same for every source, or (S, H*d).

    ``v_j = W_V (gamma_1 * s_j * centre(h_j)) + W_V beta_1 + b_V``: the first term is token j's, the rest is
    the model's constant. Where a convolution makes the sources (CvT), beta_1 reaches each through
    :attr:`HeldBlock.value_offset`, which differs at the border (the zero padding sees fewer taps of it).
    """
    w_v, b_v = (_weight(p, x, 0.0) for p in block.value)
    beta = _weight(block.norm1.bias, x, 0.0)
    if block.value_offset is None:
        return (beta @ w_v.T + b_v).unsqueeze(0)
    offset = block.value_offset(beta).to(x)
    if offset.shape != (sources, beta.shape[0]):
        raise RuntimeError(f"the value offset has shape {tuple(offset.shape)} for {sources} key/value sources "
                           f"of width {beta.shape[0]}")
    return offset @ w_v.T + b_v


def _attention_step(block: HeldBlock, stream: _Stream, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                    v: torch.Tensor) -> torch.Tensor:
    """Add the attention branch to ``stream``'s parts; returns the model's stream after it (B, D).

    Token j's part is what its centred, normalised stream carries, ``a_hj W_O^h W_V^h (gamma_1 s_j
    centre(h_j))``: its value less the value's constant (:func:`_value_constant`). Those constants,
    weighted by the attention, go to ``stream.const`` with the output bias, so a token whose centred
    stream is zero carries nothing and a bias moved between LN1's beta and the value bias moves no part.
    For a constant the same at every source the weighted sum is the constant itself (the weights sum to 1).

    The returned value is computed from every token's value, not from the parts, so that it is
    right when only some tokens are tracked one by one.
    """
    t = stream.token
    weights = torch.softmax(q[:, :, t, :].unsqueeze(2) @ k.transpose(-1, -2) * block.scale, dim=-1)[:, :, 0, :]
    self_weight = weights[:, :, t]  # (B, H): the CLS row's weight on its own value
    linear, _ = _held_norm(block.norm1, x[:, t])
    w_v = _weight(block.value[0], x, 0.0)
    heads, width = block.heads, w_v.shape[0] // block.heads
    batch, tokens = stream.parts.shape[:2]

    def per_head(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:  # (B, n, H*d) * (B, H) or (B, n, H)
        shaped = values.reshape(*values.shape[:-1], heads, width)
        return (shaped * weight.unsqueeze(-1)).reshape(values.shape)

    constant = _value_constant(block, x, k.shape[2])  # (1 or S, H*d)
    by_head = constant.reshape(constant.shape[0], heads, width).transpose(0, 1)  # (H, 1 or S, d)
    own = per_head(linear(stream.parts) @ w_v.T, self_weight[:, None, :])  # the self-term, through every part
    centred = v[:, :, :tokens] - by_head[:, :tokens]  # every tracked token's value less its constant (B, H, P, d)
    messages = centred.transpose(1, 2) * weights[:, :, :tokens].transpose(1, 2).unsqueeze(-1)  # (B, P, H, d)
    messages[:, t] = 0.0  # the stream's own value is the self-term above, split over its parts
    parts_message = own + messages.reshape(batch, tokens, heads * width)
    if constant.shape[0] == 1:  # the same at every source: its weighted sum is itself
        weighted_constant = constant.expand(batch, -1)
    else:
        weighted_constant = torch.einsum("bhs,hsd->bhd", weights, by_head).reshape(batch, heads * width)
    const_message = per_head(linear(stream.const) @ w_v.T, self_weight) + weighted_constant
    w_o = _weight(block.out.weight, x, 0.0)
    b_o = _weight(block.out.bias, x, 0.0, size=w_o.shape[0])
    stream.parts = stream.parts + _layer_scale(block.scale1, parts_message @ w_o.T)
    stream.const = stream.const + _layer_scale(block.scale1, const_message @ w_o.T + b_o)
    attended = (weights.unsqueeze(-1) * v).sum(dim=2).reshape(batch, heads * width)  # the CLS row's own output
    return x[:, t] + _layer_scale(block.scale1, attended @ w_o.T + b_o)  # where the MLP's gates are held


def _mlp_step(block: HeldBlock, stream: _Stream, x: torch.Tensor) -> None:
    """Apply the MLP branch, gates held at ``x`` (the stream after attention), to every part."""
    linear, beta = _held_norm(block.norm2, x)
    w1, w2 = _weight(block.fc1.weight, x, 0.0), _weight(block.fc2.weight, x, 0.0)
    b1, b2 = _weight(block.fc1.bias, x, 0.0, size=w1.shape[0]), _weight(block.fc2.bias, x, 0.0, size=w2.shape[0])
    gate = activation_gate(block.act, (linear(x) + beta) @ w1.T + b1)  # (B, 4D)
    stream.parts = stream.parts + _layer_scale(block.scale2, ((linear(stream.parts) @ w1.T) * gate[:, None]) @ w2.T)
    stream.const = stream.const + _layer_scale(
        block.scale2, ((linear(stream.const) + beta) @ w1.T + b1) * gate @ w2.T + b2)


def _update(block: HeldBlock, run: _Run) -> None:
    if run.block_input is None:
        raise RuntimeError("the held linearisation saw a block finish that it did not see start")
    x = _computing(run.block_input)
    q, k, v = _queries_keys_values(block, run.captured, x.dtype)
    sources = k.shape[2]  # the tokens attended to: every token, or a coarser key/value grid (CvT)
    if run.track is not None:
        sources = min(sources, run.track)
    if not run.streams:  # the first block: each read-out token starts as its own embedding
        for token in run.readouts:
            parts = x.new_zeros(x.shape[0], sources, x.shape[-1])
            parts[:, token] = x[:, token]
            run.streams.append(_Stream(token, parts, torch.zeros_like(x[:, 0])))
    elif run.streams[0].parts.shape[1] != sources:
        raise RuntimeError(f"a block attends to {sources} tokens, the one before to "
                           f"{run.streams[0].parts.shape[1]}: the held split needs one token layout per stack")
    for stream in run.streams:
        after_attention = _attention_step(block, stream, x, q, k, v)
        _mlp_step(block, stream, after_attention)
    run.captured.clear()
    run.block_input = None


def _computing(x: torch.Tensor) -> torch.Tensor:
    """The tokens in the dtype the split is computed in: float64 for a float64 model, else float32."""
    return x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)


def _input_tensor(args: tuple, kwargs: dict) -> torch.Tensor:
    value = args[0] if args else kwargs.get("hidden_states", next(iter(kwargs.values()), None))
    if not isinstance(value, torch.Tensor):
        raise RuntimeError("the held linearisation could not read a block's input tokens")
    return value


def _finish(stack: HeldStack, run: _Run, x: torch.Tensor) -> None:
    """Each read-out token through the final norm, its scale held at the token's value: the last step of the split."""
    for stream in run.streams:  # the norm sees every token, or the read-out token alone (timm's fc_norm)
        token = x if x.ndim == 2 else x[:, stream.token if x.shape[1] > stream.token else 0]
        linear, beta = _held_norm(stack.final_norm, token)
        run.final.append(TokenParts(linear(stream.parts), linear(stream.const) + beta, linear(token) + beta))


@contextmanager
def held_linearisation(stack: HeldStack, track: int | None = None) -> Iterator[list[TokenParts]]:
    """Hook ``stack`` for one forward: yields a list that holds each read-out token's parts once it ran.

    Use as ``with held_linearisation(stack) as tokens: model(...)``; then ``tokens[i]`` is the split
    of ``stack.readouts[i]``. With ``track=P`` only the first P tokens (the CLS and other prefix
    tokens) are split one by one and the rest are summed (``TokenParts.untracked``): what a pooled
    index needs, at almost no cost over the forward. The hooks are removed on exit, whatever happens.
    """
    run = _Run(stack.readouts, track)
    handles: list[RemovableHandle] = []
    started: list[int] = []  # the blocks whose forward began, in order: one forward is 0, 1, ..., then the norm

    def remember_input(index: int) -> Callable[[nn.Module, tuple, dict], None]:
        def remember(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            if run.final or index != len(started):
                raise RuntimeError(
                    f"the held linearisation saw block {index} start after "
                    f"{'the final norm' if run.final else f'{len(started)} blocks'}: a second forward inside "
                    "one held_linearisation context (or a block run out of order); use one context per forward")
            started.append(index)
            run.block_input = _input_tensor(args, kwargs)
        return remember

    def tap(name: str) -> Callable[[nn.Module, tuple, torch.Tensor], None]:
        def keep(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
            run.captured[name] = output
        return keep

    def finish_block(block: HeldBlock) -> Callable[[nn.Module, tuple, object], None]:
        def finish(_module: nn.Module, _args: tuple, _output: object) -> None:
            with full_precision():  # the split's own products, whatever autocast the forward runs under
                _update(block, run)
        return finish

    def finish_stack(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        if run.final or len(started) != len(stack.blocks):
            raise RuntimeError(f"the held linearisation saw the final norm run after {len(started)} of "
                               f"{len(stack.blocks)} blocks{' and once before' if run.final else ''}: one "
                               "held_linearisation context holds exactly one forward")
        with full_precision():
            _finish(stack, run, _computing(_input_tensor(args, kwargs)))

    try:
        for index, block in enumerate(stack.blocks):
            handles.append(block.module.register_forward_pre_hook(remember_input(index), with_kwargs=True))
            handles.extend(module.register_forward_hook(tap(name)) for name, module in block.qkv.items())
            handles.append(block.module.register_forward_hook(finish_block(block)))
        handles.append(stack.final_norm.register_forward_pre_hook(finish_stack, with_kwargs=True))
        yield run.final
    finally:
        for handle in handles:
            handle.remove()
