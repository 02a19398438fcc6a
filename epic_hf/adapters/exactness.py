"""The check that makes "exact" a fact per batch: a decomposition against the model's own logits.

The load-time check proves an adapter's algebra on two probe images. It cannot see what happens
to the model afterwards: a forward hook added to its classifier, a module left in train mode, an
autocast around the call. So every batch that is explained, indexed or evaluated compares the
logits its terms add up to with the logits the model's own forward returned for that batch, and
refuses to present a decomposition that does not match (:class:`~epic_hf.errors.DecompositionError`).

The tolerance is relative (to the image's largest |logit|) and follows the least precise dtype
that took part: a forward under a bfloat16 autocast is checked at bfloat16's tolerance, one in
float32 at float32's. The decomposition's own arithmetic always runs in float32 or better
(:func:`full_precision`), so only the model's forward sets the precision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch

from ..errors import DecompositionError

#: Relative error (of the largest |logit|) above which the linear-head identity is considered broken,
#: per dtype of the forward. float32: about 800 ulps, what a deep held split accumulates at most;
#: half precisions: a few units of their 8- or 11-bit mantissas over a long dot product.
TOLERANCES: dict[torch.dtype, float] = {
    torch.float64: 1e-8,
    torch.float32: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 5e-2,
}

#: The float32 tolerance: the one the load-time check and a bank's U are held to.
IDENTITY_TOLERANCE = TOLERANCES[torch.float32]


def tolerance_for(*dtypes: torch.dtype) -> float:
    """The tolerance of the least precise of ``dtypes`` (an unknown dtype counts as float32)."""
    return max(TOLERANCES.get(dtype, IDENTITY_TOLERANCE) for dtype in dtypes)


def relative_gaps(decomposed: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per image, ``max_k |decomposed - logits| / max_k |logits|`` (B,), in float64; NaN or inf stays so."""
    decomposed, logits = decomposed.double(), logits.double()
    scale = logits.abs().amax(dim=-1).clamp_min(1e-6)
    return (decomposed - logits).abs().amax(dim=-1) / scale


def check_decomposition(decomposed: torch.Tensor, logits: torch.Tensor, *, tolerance: float, model_type: str,
                        id2label: Mapping[int, str] | None = None, what: str = "the decomposition") -> float:
    """Raise :class:`DecompositionError` where ``decomposed`` (B, K) is not ``logits`` (B, K) within ``tolerance``.

    Returns the largest relative gap of the batch. The error names the model type, the image and
    class with the largest gap, the gap and the tolerance.
    """
    gaps = relative_gaps(decomposed, logits)
    if gaps.numel() == 0:
        return 0.0
    bad = ~(gaps <= tolerance)  # NaN counts as bad
    if not bool(bad.any()):
        return float(gaps.max())
    image = int(torch.nan_to_num(gaps, nan=float("inf")).argmax())
    per_class = torch.nan_to_num((decomposed[image].double() - logits[image].double()).abs(), nan=float("inf"))
    klass = int(per_class.argmax())
    label = (id2label or {}).get(klass, str(klass))
    raise DecompositionError(model_type=model_type, class_index=klass, label=label, gap=float(gaps[image]),
                             tolerance=tolerance, image=image, what=what)


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """No autocast inside: the decomposition's products run in the dtype their tensors have.

    A caller's ``torch.autocast`` would otherwise run them in bfloat16 or float16 (and some, such as
    the LU behind ``torch.linalg.solve``, have no bfloat16 kernel on the CPU at all).
    """
    with contextlib.ExitStack() as stack:
        for device_type in ("cpu", "cuda"):
            if device_type == "cuda" and not torch.cuda.is_available():
                continue
            stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
        yield
