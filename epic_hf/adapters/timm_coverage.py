"""What the timm adapter covers, as data: the architectures tested, those checked once at full size, and those refused.

Kept apart from :mod:`.timm_wrapper` so that the reader of the code and the reader of
``docs/supported_models.md`` (generated from these tables) each find one thing in one place.
"""

from __future__ import annotations

#: timm architectures whose tiny instances ``tests/test_timm.py`` decomposes exactly, and how F is read.
VERIFIED_ARCHITECTURES = {
    "resnet18 (ResNet)": "forward_features map; global_pool='avg' then fc",
    "test_efficientnet (EfficientNet)": "forward_features map (conv_head and bn2 come before the pool); classifier",
    "regnetx_002 (RegNet)": "forward_features map; ClassifierHead (avg pool, fc)",
    "convnext_atto (ConvNeXt)": "forward_features map, head.norm (LayerNorm2d after the pool) folded into F",
    "dla34 (DLA)": "forward_features map; global_pool='avg' then a 1x1 convolution, read as its (out, in) matrix",
    "swin_tiny_patch4_window7_224 (SwinTransformer)": "forward_features (B, H, W, C) map, permuted; ClassifierHead",
    "vit_tiny_patch16_224 with global_pool='token' (VisionTransformer; also with reg_tokens, init_values, fc_norm)": (
        "the CLS token split over the tokens per image by the held linearisation (LayerNorm scales, attention "
        "weights, MLP gates held); F = the patch tokens' parts on the patch grid; the CLS's and register "
        "tokens' own parts are the exact CLS term"
    ),
    "deit_tiny_distilled_patch16_224 (VisionTransformerDistilled)": (
        "the CLS and distillation tokens each split by the held linearisation; F stacks the two splits "
        "(2D channels) and A = [W_head / 2 | W_head_dist / 2], the average forward_head takes"
    ),
    "mobilenetv3_small_050 (MobileNetV3; LCNet and FBNetV3 are the same class)": (
        "forward_features map through conv_head cell by cell, times the held gate of its activation at the "
        "pooled input: F = the head's hidden units, whose mean is exactly what the classifier reads"
    ),
    "eva02_tiny_patch14_224 with global_pool='avg' (Eva: rotary attention, SwiGLU MLP)": (
        "patch tokens (the class token dropped) on the patch grid, fc_norm folded into F: the blocks compute "
        "whatever they compute, the head is a mean, a LayerNorm and a Linear"
    ),
    "beit_base_patch16_224 and vit_relpos_base_patch16_224 with global_pool='avg' (Beit, VisionTransformerRelPos)": (
        "patch tokens on the patch grid, fc_norm folded into F, as for Eva: relative position biases change "
        "the blocks, not the head"
    ),
    "pvt_v2_b0 and twins_svt_small (PyramidVisionTransformerV2, Twins)": (
        "the mean forward_head writes itself (global_pool='avg'), over a (B, C, H, W) map (PVT v2) or over "
        "(B, N, C) tokens (Twins, MLP-Mixer), the layout read by trying both shapes on random features and the "
        "token grid from the last stage's reduction; then the Linear head"
    ),
    "efficientvit_b0 (EfficientVit, MIT)": (
        "forward_features map through the head's in_conv cell by cell; after the pool, the Linear, its LayerNorm "
        "(folded, scale held) and hard-swish (gate held): F = the head's hidden units, per image"
    ),
    "efficientvit_m0 (EfficientVitMsra)": (
        "forward_features map; SelectAdaptivePool2d; its NormLinear head (BatchNorm1d, Linear) folded into one Linear"
    ),
    "LevitDistilled and EfficientFormerV2 built from their classes (two heads averaged)": (
        "the mean forward_head writes over tokens (LeViT) or a map (EfficientFormerV2); head and head_dist act "
        "on the same pooled vector and are averaged, one affine map folded into one frozen Linear (LeViT's "
        "BatchNorm1d before each Linear folded in); the token grid of a square input is square"
    ),
    "MetaFormer built from its class (PoolFormer's head; ConvFormer's and CAFormer's MlpHead)": (
        "forward_features map; pool, LayerNorm2d folded into F, then the Linear, or MlpHead's fc1 and activation "
        "cell by cell with the gate held and its LayerNorm folded: F = the head's hidden units"
    ),
    "vit_tiny_patch16_224 with global_pool='avg' (VisionTransformer)": (
        "patch tokens (num_prefix_tokens: class and register tokens dropped) on the patch grid; fc_norm "
        "folded into F, or nothing to fold with fc_norm=False (the per-token norm comes before the mean)"
    ),
}

#: Exact at full size with random weights in a one-off check (timm 1.0.31), not in the test suite.
CHECKED_ARCHITECTURES = (
    "resnet50", "resnet18d", "seresnext26d_32x4d", "res2net50_26w_4s", "efficientnet_b0", "tf_efficientnetv2_b0",
    "mixnet_s", "mobilenetv2_100", "mnasnet_100", "regnety_008", "convnext_tiny", "convnextv2_atto",
    "densenet121", "inception_v3", "cspresnet50", "edgenext_xx_small", "rexnet_100", "nfnet_l0",
    "hrnet_w18_small", "tresnet_m", "xception41", "repvgg_a0", "fastvit_t8", "coatnet_0_rw_224",
    "swin_tiny_patch4_window7_224", "swinv2_cr_tiny_224", "dla34", "vit_small_patch16_224 (global_pool='avg')",
    "vit_medium_patch16_gap_256", "mobilenetv3_large_100", "mobilenetv4_conv_small", "mobilenetv4_hybrid_medium",
    "lcnet_050", "fbnetv3_b", "ghostnet_100", "vit_small_patch16_224", "vit_base_patch16_224",
    "vit_base_patch16_clip_224", "deit_small_patch16_224", "deit_small_distilled_patch16_224",
    "eva02_tiny_patch14_224", "eva02_small_patch14_336", "eva02_base_patch14_224", "eva_giant_patch14_224",
    "beit_base_patch16_224", "beitv2_base_patch16_224", "vit_relpos_base_patch16_224", "vit_srelpos_small_patch16_224",
    "pvt_v2_b0", "visformer_tiny", "twins_svt_small", "twins_pcpvt_small", "mixer_b16_224", "resmlp_12_224",
    "gmlp_ti16_224", "poolformer_s12", "poolformerv2_s12", "convformer_s18", "caformer_s18", "levit_128s",
    "levit_256", "levit_conv_128s", "efficientformer_l1", "efficientformerv2_s0", "efficientvit_m0",
    "efficientvit_b0", "efficientvit_b1", "efficientvit_l1",
)

#: Heads that are refused, and why; the same reasons appear in the load-time error messages.
REFUSED_HEADS = {
    "ViT with global_pool='token' and qk_norm, scale_norm, gated attention or another block class": (
        "the held split reads timm's plain Block, Attention and Mlp only; the rest is refused by name"),
    "ViT with global_pool='map' (SigLIP-style attention pooling)": "the pooling weights depend on the input",
    "global_pool='max', 'avgmax', 'catavgmax'": "a maximum over space is not linear in F",
    "MaxViT (maxvit_*)": "NormMlpClassifierHead with head_hidden_size: a hidden Linear and tanh after the pool",
    "Eva with global_pool='token'": (
        "its CLS token passes Eva blocks (rotary attention, SwiGLU MLP, norms inside), which the held split does "
        "not read; Eva with global_pool='avg' is exact"),
    "CaiT, XCiT (class-attention blocks on the CLS token)": (
        "global_pool='token' through blocks other than timm's plain Block, which the held split does not read"),
}
