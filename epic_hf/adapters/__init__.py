"""Per-family access to a classifier's spatial feature map F and its linear head (A, b).

``base`` holds the contract and the load-time exactness check, ``registry`` the table keyed by
``config.model_type`` (and the refused families with their reasons), and one module per family
registers its adapter on import. Importing this package registers every family;
:func:`adapter_for` is the one entry point.

The extension API (docs/adding_a_family.md): :class:`ModelAdapter` and :func:`register_adapter` for
a model whose logits are a linear map of an averaged feature map; :class:`HeldTokenAdapter`, whose
``build_stack()`` returns a :class:`HeldStack` of :class:`HeldBlock` (:func:`hf_vit_blocks` reads
transformers' ViT layers), for one that reads a CLS token.
"""

from . import (  # noqa: F401 - importing registers each family
    beit,
    cls_stages,
    convnets,
    convnext,
    dinov2,
    efficientnet,
    gated,
    hiera,
    imagegpt,
    levit,
    metaformers,
    patch_mean,
    segformer,
    siglip2,
    swin,
    timm_wrapper,
    vit,
)
from .base import (
    LinearHead,
    ModelAdapter,
    ModelForward,
    PooledFeatures,
    SpatialFeatures,
    fold_post_pool_layernorm,
    model_config,
    tokens_to_grid,
)
from .exactness import IDENTITY_TOLERANCE, check_decomposition, full_precision, relative_gaps, tolerance_for
from .held import HeldBlock, HeldStack
from .registry import (
    ADAPTERS,
    REFUSED,
    adapter_class_for,
    adapter_for,
    register_adapter,
    supported_families_text,
    supported_model_types,
)
from .vit import HeldTokenAdapter, hf_vit_blocks

__all__ = [
    "ADAPTERS",
    "IDENTITY_TOLERANCE",
    "REFUSED",
    "HeldBlock",
    "HeldStack",
    "HeldTokenAdapter",
    "LinearHead",
    "ModelAdapter",
    "ModelForward",
    "check_decomposition",
    "full_precision",
    "relative_gaps",
    "tolerance_for",
    "PooledFeatures",
    "SpatialFeatures",
    "adapter_class_for",
    "adapter_for",
    "fold_post_pool_layernorm",
    "hf_vit_blocks",
    "model_config",
    "register_adapter",
    "supported_families_text",
    "supported_model_types",
    "tokens_to_grid",
]
