"""`EpicExplainer`: a frozen Hugging Face classifier that explains itself with prototypes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as nnf
from torch import nn

from .adapters import ModelAdapter, adapter_class_for, adapter_for
from .bank import PrototypeBank
from .disentangle import Disentangler, MatrixKind, cell_box, peak_cells
from .explanation import ChannelExplanation, Explanation
from .images import ImageInput, pixel_values_to_image, to_rgb

logger = logging.getLogger(__name__)


class EpicExplainer:
    """Wraps a classifier so that ``logits = A U^-1 . avg_hw(U F) + b`` explains each decision.

    Construct with :meth:`from_pretrained` (a Hub id or local directory of a classifier or of
    an EPIC bank), or directly from a loaded model and image processor. The model is frozen:
    EPIC never changes a prediction.
    """

    def __init__(
        self,
        model: nn.Module,
        image_processor: Any,
        matrix: MatrixKind = "orthogonal",
        bank: PrototypeBank | None = None,
        *,
        base_model_name_or_path: str | None = None,
        base_model_revision: str | None = None,
    ) -> None:
        self.model = model.eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.image_processor = image_processor
        self.adapter: ModelAdapter = adapter_for(model)
        self.base_model_name_or_path = base_model_name_or_path or getattr(model, "name_or_path", None) or None
        self.base_model_revision = base_model_revision
        probe = self._probe_pixel_values()
        self.adapter.verify(probe)
        head = self.adapter.head()
        self.num_channels = head.weight.shape[1]
        self.disentangler = Disentangler(self.num_channels, matrix).to(self.device)
        self._head_cache: tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.bank: PrototypeBank | None = None
        if bank is not None:
            self.set_bank(bank)

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        revision: str | None = None,
        matrix: MatrixKind = "orthogonal",
        **hub_kwargs: Any,
    ) -> "EpicExplainer":
        """Load a classifier (Hub id or directory) or an EPIC repo, which loads its base model.

        ``hub_kwargs`` (``token``, ``cache_dir``, ``local_files_only``, ...) go to
        ``huggingface_hub`` and ``transformers``.
        """
        from .bank_io import is_epic_repo, load_explainer_from_epic_repo

        if is_epic_repo(name_or_path, revision=revision, **hub_kwargs):
            return load_explainer_from_epic_repo(cls, name_or_path, revision=revision, **hub_kwargs)
        return cls.from_classifier(name_or_path, revision=revision, matrix=matrix, **hub_kwargs)

    @classmethod
    def from_classifier(
        cls, name_or_path: str | Path, revision: str | None = None, matrix: MatrixKind = "orthogonal", **hub_kwargs: Any
    ) -> "EpicExplainer":
        """Load a plain image classifier with ``AutoModelForImageClassification``."""
        from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

        config = AutoConfig.from_pretrained(str(name_or_path), revision=revision, **hub_kwargs)
        adapter_class_for(config.model_type)  # refuse an unsupported family before downloading weights
        model = AutoModelForImageClassification.from_pretrained(str(name_or_path), revision=revision, **hub_kwargs)
        processor = AutoImageProcessor.from_pretrained(str(name_or_path), revision=revision, **hub_kwargs)
        commit = _resolved_commit(name_or_path, revision, model, hub_kwargs)
        return cls(model, processor, matrix, base_model_name_or_path=str(name_or_path), base_model_revision=commit)

    # -- basic properties ----------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def matrix(self) -> str:
        return self.disentangler.kind

    @property
    def U(self) -> torch.Tensor:
        """The current (D, D) disentangling matrix."""
        return self._head()[1]

    @property
    def id2label(self) -> dict[int, str]:
        return {int(k): str(v) for k, v in (self.model.config.id2label or {}).items()}

    def set_bank(self, bank: PrototypeBank, check_base_model: bool = True) -> None:
        """Attach a bank; its S becomes the explainer's disentangler.

        A bank fit on another model (other D, model_type or base model) is refused with
        :class:`BankMismatchError`.
        """
        from .bank_io import check_bank_matches

        check_bank_matches(
            bank, self.model.config.model_type, self.num_channels,
            self.base_model_name_or_path if check_base_model else None,
        )
        if bank.matrix != self.disentangler.kind:
            self.disentangler = Disentangler(self.num_channels, bank.matrix).to(self.device)  # type: ignore[arg-type]
        with torch.no_grad():
            self.disentangler.S.copy_(bank.S.to(self.disentangler.S))
        self.bank = bank

    # -- preprocessing -------------------------------------------------------------------
    def _probe_pixel_values(self) -> torch.Tensor:
        if not hasattr(self, "_probe"):
            from PIL import Image

            generator = torch.Generator().manual_seed(0)
            noise = (torch.rand(64, 64, 3, generator=generator) * 255).to(torch.uint8).numpy()
            probe = self.preprocess([Image.fromarray(noise)])
            self._probe = torch.cat([probe, probe.flip(-1)])
        return self._probe

    def preprocess(self, images: Sequence[Any]) -> torch.Tensor:
        """RGB-coerce ``images`` and run the image processor: (B, C, H, W) on the model's device."""
        rgb = [to_rgb(image, position) for position, image in enumerate(images)]
        pixel_values = self.image_processor(images=rgb, return_tensors="pt")["pixel_values"]
        parameter = next(self.model.parameters())
        return pixel_values.to(device=parameter.device, dtype=parameter.dtype)

    def _as_pixel_values(self, images: Any) -> torch.Tensor:
        if isinstance(images, torch.Tensor):
            if images.ndim != 4:
                raise ValueError(f"pixel_values must be (B, C, H, W), got shape {tuple(images.shape)}")
            parameter = next(self.model.parameters())
            return images.to(device=parameter.device, dtype=parameter.dtype)
        if not isinstance(images, (list, tuple)):
            images = [images]
        return self.preprocess(images)

    # -- the core maps -------------------------------------------------------------------
    def _head(self) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(cache key, U, A' = A U^-1, b), recomputed only when S changes."""
        S = self.disentangler.S
        key = (S.data_ptr(), S._version, self.disentangler.kind, S.device)
        if self._head_cache is None or self._head_cache[0] != key:
            with torch.no_grad():
                head = self.adapter.head()
                U = self.disentangler.matrix().detach()
                weight = head.weight.to(U) @ self.disentangler.inverse().detach()
                self._head_cache = (key, U, weight, head.bias.to(U))
        return self._head_cache

    @torch.no_grad()
    def feature_map(self, images: Any, transformed: bool = True) -> torch.Tensor:
        """G = U F (or F with ``transformed=False``) for images or a pixel_values tensor: (B, D, H, W)."""
        fmap = self.adapter.feature_map(self._as_pixel_values(images)).float()
        if not transformed:
            return fmap
        return torch.einsum("ij,bjhw->bihw", self.U, fmap)

    def _resolve_target(self, target: int | str | None, logits: torch.Tensor) -> int:
        num_classes = logits.shape[-1]
        if target is None:
            return int(logits.argmax())
        if isinstance(target, str):
            by_label = {label: index for index, label in self.id2label.items()}
            if target in by_label:
                return by_label[target]
            examples = ", ".join(repr(v) for v in list(by_label)[:5])
            raise ValueError(
                f"unknown target label {target!r}; use a class index in [0, {num_classes - 1}] or one "
                f"of the model's labels (e.g. {examples})"
            )
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < num_classes:
            raise ValueError(f"target must be a class index in [0, {num_classes - 1}] or a label name, got {target!r}")
        return int(target)

    # -- explanations --------------------------------------------------------------------
    def explain(
        self,
        image: ImageInput | Sequence[ImageInput],
        target: int | str | None = None,
        top_k: int = 4,
        batch_size: int = 32,
    ) -> Explanation | list[Explanation]:
        """Explain the prediction (or ``target``) for one image, or for a list of them.

        A list returns a list, processed in batches of ``batch_size``. ``top_k`` channels with
        the largest contributions get boxes, heatmaps and (when a bank exists) prototypes.
        """
        single = _is_single_image(image)
        images = [image] if single else list(image)
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        explanations: list[Explanation] = []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            explanations.extend(self._explain_batch(batch, target, top_k, offset=start))
        return explanations[0] if single else explanations

    @torch.no_grad()
    def _explain_batch(self, images: list, target: int | str | None, top_k: int, offset: int) -> list[Explanation]:
        try:
            pixel_values = self.preprocess(images)
        except ValueError as error:  # re-number positions within the whole list
            raise _renumber(error, offset) from None
        fmap = self.adapter.feature_map(pixel_values).float()
        _, U, weight, bias = self._head()
        pooled = fmap.mean(dim=(2, 3)) @ U.T  # avg_hw(G) = U avg_hw(F)
        logits = pooled.double() @ weight.double().T + bias.double()
        grid = tuple(fmap.shape[-2:])
        input_size = tuple(pixel_values.shape[-2:])
        k = min(top_k, self.num_channels)
        results = []
        for index in range(fmap.shape[0]):
            target_index = self._resolve_target(target, logits[index])
            contributions = weight[target_index].double() * pooled[index].double()
            top = contributions.topk(k).indices
            maps = torch.einsum("cd,dhw->chw", U[top], fmap[index])  # only the top channels' G_c
            rows, cols = peak_cells(maps)
            heatmaps = nnf.interpolate(maps.relu()[None], size=input_size, mode="bilinear", align_corners=False)[0]
            channels = []
            for slot, channel in enumerate(top.tolist()):
                channels.append(
                    ChannelExplanation(
                        channel=channel,
                        contribution=float(contributions[channel]),
                        box=cell_box(int(rows[slot]), int(cols[slot]), grid, input_size),
                        heatmap=heatmaps[slot].cpu(),
                        prototypes=self.bank.prototypes(channel) if self.bank is not None else [],
                    )
                )
            results.append(
                Explanation(
                    logits=logits[index].float().cpu(),
                    target_index=target_index,
                    target_label=self.id2label.get(target_index, str(target_index)),
                    contributions=contributions.cpu(),
                    bias=float(bias[target_index]),
                    channels=channels,
                    image=pixel_values_to_image(pixel_values[index], self.image_processor),
                    id2label=self.id2label,
                )
            )
        return results

    # -- fitting (see epic_hf.training) --------------------------------------------------
    def fit(self, dataset: Any, **kwargs: Any):
        """Learn U and mine the prototype bank on ``dataset``; returns a :class:`FitReport`.

        See :func:`epic_hf.training.fit` for every argument.
        """
        from .training import fit

        return fit(self, dataset, **kwargs)

    def purity(self, dataset: Any, **kwargs: Any) -> float:
        """Mean purity of the current bank's prototypes, recomputed from ``dataset``."""
        from .training import bank_purity

        return bank_purity(self, dataset, **kwargs)

    # -- persistence (see epic_hf.bank_io) ------------------------------------------------
    def save_pretrained(self, save_directory: str | Path) -> Path:
        """Write the EPIC repo (config, bank safetensors, model card) to ``save_directory``."""
        from .bank_io import save_explainer

        return save_explainer(self, Path(save_directory))

    def push_to_hub(
        self,
        repo_id: str,
        private: bool = False,
        token: str | None = None,
        commit_message: str = "Upload EPIC prototype bank",
        **kwargs: Any,
    ) -> str:
        """Push the EPIC repo to the Hub; returns the commit URL."""
        from .bank_io import push_explainer_to_hub

        return push_explainer_to_hub(self, repo_id, private=private, token=token, commit_message=commit_message, **kwargs)

    def __repr__(self) -> str:
        bank = "no bank" if self.bank is None else f"bank of {self.bank.prototypes_per_channel} per channel"
        return (
            f"EpicExplainer({self.model.config.model_type}, D={self.num_channels}, "
            f"matrix={self.matrix!r}, {bank})"
        )


def _resolved_commit(name_or_path: str | Path, revision: str | None, model: nn.Module,
                     hub_kwargs: dict[str, Any]) -> str | None:
    """The commit a Hub model was loaded at, so that a bank can pin its base model exactly."""
    commit = getattr(model.config, "_commit_hash", None)
    if commit or Path(name_or_path).is_dir():
        return commit or revision
    from huggingface_hub import hf_hub_download

    from .bank_io import hub_download_kwargs

    try:  # a cache hit: the snapshot folder of the file is named by its commit
        config_path = Path(hf_hub_download(str(name_or_path), "config.json", revision=revision,
                                           **hub_download_kwargs(hub_kwargs)))
    except Exception as error:  # noqa: BLE001 - the revision stays as given
        logger.debug("could not resolve the commit of %s: %s", name_or_path, error)
        return revision
    name = config_path.parent.name
    return name if len(name) == 40 and all(c in "0123456789abcdef" for c in name) else revision


def _is_single_image(image: Any) -> bool:
    """One image (PIL, array, path, decoded-or-not record), as opposed to a sequence of them."""
    import os

    import numpy as np
    from PIL import Image

    if isinstance(image, (Image.Image, np.ndarray, str, os.PathLike, dict)):
        return True
    return not hasattr(image, "__iter__")


def _renumber(error: ValueError, offset: int) -> ValueError:
    message = str(error)
    if offset and message.startswith("input "):
        head, _, rest = message.partition(":")
        try:
            return ValueError(f"input {int(head.split()[1]) + offset}:{rest}")
        except (IndexError, ValueError):
            pass
    return error
