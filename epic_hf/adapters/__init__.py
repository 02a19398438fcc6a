"""Per-family access to a classifier's spatial feature map F and its linear head (A, b).

``base`` holds the contract and the load-time exactness check, ``registry`` the table keyed by
``config.model_type`` (and the refused families with their reasons), and one module per family
registers its adapter on import. Importing this package registers every family;
:func:`adapter_for` is the one entry point.
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
from .registry import (
    ADAPTERS,
    CLS_TOKEN_FAMILIES,
    REFUSED,
    adapter_class_for,
    adapter_for,
    register_adapter,
    supported_families_text,
    supported_model_types,
)

__all__ = [
    "ADAPTERS",
    "CLS_TOKEN_FAMILIES",
    "IDENTITY_TOLERANCE",
    "REFUSED",
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
    "model_config",
    "register_adapter",
    "supported_families_text",
    "supported_model_types",
    "tokens_to_grid",
]
