"""`EpicExplainer`: a frozen Hugging Face classifier that explains itself with prototypes.

It joins two pieces: the :class:`~epic_hf.backbone.FrozenClassifier` (model, processor,
adapter) and the :class:`~epic_hf.bank.PrototypeBank`, which owns U (its
:class:`~epic_hf.disentangle.Disentangler`); without a bank U is the identity. Explanations are built in :mod:`epic_hf.decompose`, fits
in :mod:`epic_hf.fit`, files in :mod:`epic_hf.bank_format` and :mod:`epic_hf.hub`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, overload

import torch
from huggingface_hub import ModelCard
from torch import nn

from .adapters import ModelAdapter
from .aliases import ImageProcessor
from .atomic import atomic_path
from .audit import AuditConfig, AuditReport, run_audit
from .backbone import FrozenClassifier, ModelReference
from .bank import PrototypeBank
from .bank_format import CONFIG_NAME
from .config import FitConfig
from .data import DatasetLike
from .decompose import Decomposer
from .disentangle import MATRIX_KINDS, Disentangler, MatrixKind
from .errors import BankMismatchError
from .evaluation import EvaluationConfig, EvaluationReport, evaluate_explainer
from .explanation import Explanation
from .fit import FitReport, bank_purity, run_fit
from .fit.index import KeptIndex
from .hub import HubMixin, has_file, hub_access
from .images import ImageInput, is_single_image, per_image
from .loading import load_classifier, resolve_base_model
from .viz.curve import render_purity_curve

if TYPE_CHECKING:
    from accelerate import Accelerator

    from .evaluation.explain_func import QuantusExplainFunc

logger = logging.getLogger(__name__)


T = TypeVar("T")


class _Classifiers(Generic[T]):
    """An explainer attribute that is its classifier's own, read through a dotted path.

    Why: the explainer exposes the wrapped model's facts (``model``, ``device``, ``id2label``, ...) as its
    own, as the public API promises; one typed descriptor says so once instead of a property apiece.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    @overload
    def __get__(self, explainer: None, owner: type) -> _Classifiers[T]: ...

    @overload
    def __get__(self, explainer: EpicExplainer, owner: type) -> T: ...

    def __get__(self, explainer: EpicExplainer | None, owner: type) -> _Classifiers[T] | T:
        if explainer is None:
            return self
        value: Any = explainer.classifier  # Any: read along an attribute path, returned as the T it names
        for part in self.path.split("."):
            value = getattr(value, part)
        return value


class EpicExplainer(HubMixin):
    """Wraps a classifier so that ``logits = A U^-1 . avg_hw(U F) + b`` explains each decision.

    Construct with :meth:`from_pretrained` (a Hub id or local directory of a classifier or of
    an EPIC bank), or directly from a loaded model and image processor. EPIC never changes a
    prediction, and leaves the model as it was handed over: every run is in eval mode and restores
    the caller's training flags, the model stays on its device (a fit moves it to the accelerator's
    device and back), ``requires_grad`` and the buffers are untouched. Each batch's decomposition is
    checked against the model's own forward (:class:`~epic_hf.errors.DecompositionError` where they part).
    """

    def __init__(self, model: nn.Module, image_processor: ImageProcessor, matrix: MatrixKind = "orthogonal",
                 bank: PrototypeBank | None = None, *, base_model_name_or_path: str | None = None,
                 base_model_revision: str | None = None, split_cls: bool | None = None) -> None:
        """``split_cls=True`` (DINOv2 only) splits the CLS half of the head over the tokens as D more
        channels, so that only the CLS's own part stays in ``cls_contribution``; default: the bank's
        setting, else off."""
        reference = ModelReference(base_model_name_or_path or getattr(model, "name_or_path", None) or None,
                                   base_model_revision)
        if split_cls is None:
            split_cls = bank.config.split_cls if bank is not None else False
        self.classifier = FrozenClassifier(model, image_processor, reference, split_cls=split_cls)
        if matrix not in MATRIX_KINDS:
            raise ValueError(f"matrix must be one of {MATRIX_KINDS}, got {matrix!r}")
        self._matrix: MatrixKind = matrix
        self._unfitted = Disentangler(self.num_channels, matrix)  # U = I until a bank brings its own
        self.bank: PrototypeBank | None = None
        self.fit_dir: Path | None = None  # the output_dir of this explainer's last fit, if it had one
        self.fit_index: KeptIndex | None = None  # the last fit's pooled index, when small enough to keep (audit)
        self._decomposer: tuple[Disentangler, Decomposer] | None = None
        if bank is not None:
            self.set_bank(bank)

    # -- loading -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, revision: str | None = None,
                        matrix: MatrixKind = "orthogonal", base_model: str | Path | None = None, *,
                        trust_remote_code: bool = False, split_cls: bool | None = None,
                        **hub_kwargs: Any) -> EpicExplainer:
        """Load a classifier (Hub id or directory), or an EPIC bank together with its base model.

        ``base_model``: where a bank's classifier is now, when it has moved (a folder or Hub id);
        the bank is still checked against it. ``trust_remote_code=True`` lets a classifier whose
        repo ships its own Python code run it (for this load only: a bank never records it). ``hub_kwargs`` (``token``, ``cache_dir``,
        ``local_files_only``, ...) go to ``huggingface_hub`` and ``transformers``. ``split_cls``: see
        :class:`EpicExplainer` (a bank loads with its own setting; asking for the other is refused).
        """
        with hub_access(name_or_path, hub_kwargs) as access:
            if not has_file(name_or_path, CONFIG_NAME, revision, **access):
                if base_model is not None:
                    raise ValueError(f"base_model is for EPIC banks, and {name_or_path} is not one (no {CONFIG_NAME})")
                return cls.from_classifier(name_or_path, revision=revision, matrix=matrix,
                                           trust_remote_code=trust_remote_code, split_cls=bool(split_cls), **access)
            bank = PrototypeBank.from_pretrained(name_or_path, revision=revision, **access)
        base, base_revision = resolve_base_model(bank.config, base_model, name_or_path)
        logger.info("loading base model %s (revision %s) for EPIC bank %s", base, base_revision, name_or_path)
        if split_cls is not None and split_cls != bank.config.split_cls:
            raise BankMismatchError(f"the bank {name_or_path} was fit with split_cls={bank.config.split_cls}; "
                                    f"it cannot explain with split_cls={split_cls} (leave split_cls out)")
        explainer = cls.from_classifier(base, revision=base_revision, matrix=bank.disentangler.kind,
                                        trust_remote_code=trust_remote_code, split_cls=bank.config.split_cls,
                                        **hub_kwargs)
        by_name_only = base_model is not None and not bank.config.base_model_fingerprint
        if by_name_only:  # a bank from before fingerprints: the user's word is all there is to go on
            logger.warning("the bank records no weights fingerprint: trusting that %s is the model it was fit on "
                           "(D and model type still checked)", base_model)
        explainer.set_bank(bank, check_base_model=not by_name_only)
        return explainer

    @classmethod
    def from_classifier(cls, name_or_path: str | Path, revision: str | None = None,
                        matrix: MatrixKind = "orthogonal", *, trust_remote_code: bool = False,
                        split_cls: bool = False, **hub_kwargs: Any) -> EpicExplainer:
        """Load a plain image classifier with ``AutoModelForImageClassification``.

        A model that needs its own code is refused unless ``trust_remote_code=True`` (never stored in a bank).
        """
        with hub_access(name_or_path, hub_kwargs) as access:
            model, processor, reference = load_classifier(name_or_path, revision,
                                                          trust_remote_code=trust_remote_code, **access)
        return cls(model, processor, matrix, base_model_name_or_path=reference.name_or_path,
                   base_model_revision=reference.revision, split_cls=split_cls)

    # -- what it wraps: the classifier's own, read through (``explainer.model is explainer.classifier.model``) --
    model: _Classifiers[nn.Module] = _Classifiers("model")
    image_processor: _Classifiers[ImageProcessor] = _Classifiers("image_processor")
    adapter: _Classifiers[ModelAdapter] = _Classifiers("adapter")
    num_channels: _Classifiers[int] = _Classifiers("num_channels")
    device: _Classifiers[torch.device] = _Classifiers("device")
    id2label: _Classifiers[dict[int, str]] = _Classifiers("id2label")
    base_model_name_or_path: _Classifiers[str | None] = _Classifiers("reference.name_or_path")
    base_model_revision: _Classifiers[str | None] = _Classifiers("reference.revision")

    @property
    def matrix(self) -> str:
        """The kind of U: the bank's, or the kind the next :meth:`fit` learns."""
        return self.disentangler.kind

    @property
    def disentangler(self) -> Disentangler:
        """The one holder of U: the bank's own, or the identity before a fit.

        Assigning one explains under another U without a bank (research use: a random or a
        hand-made rotation); with a bank attached, U is the bank's and assigning is refused.
        """
        return self.bank.disentangler if self.bank is not None else self._unfitted

    @disentangler.setter
    def disentangler(self, disentangler: Disentangler) -> None:
        if self.bank is not None:
            raise ValueError("this explainer's U is its bank's: attach another bank (set_bank) to change it")
        if disentangler.dim != self.num_channels:
            raise ValueError(f"U must be {self.num_channels} x {self.num_channels} for this model, "
                             f"got {disentangler.dim} x {disentangler.dim}")
        self._unfitted = disentangler

    @property
    def U(self) -> torch.Tensor:
        """The current (D, D) disentangling matrix."""
        return self.decomposer.U

    @property
    def decomposer(self) -> Decomposer:
        """The explanation maths under the current U, built once per disentangler.

        A bank's disentangler is frozen, so one Decomposer serves it for good. An assigned,
        unfrozen one (research use) is read afresh at every call, so changing its S in place is seen.
        """
        disentangler = self.disentangler
        if not disentangler.is_frozen:
            return Decomposer(self.classifier, disentangler)
        if self._decomposer is None or self._decomposer[0] is not disentangler:
            self._decomposer = (disentangler, Decomposer(self.classifier, disentangler))
        return self._decomposer[1]

    def set_bank(self, bank: PrototypeBank, check_base_model: bool = True) -> None:
        """Attach a bank; its U becomes the explainer's (the bank keeps owning it).

        A bank fit on another model (other D, model_type, or other weights) is refused with
        :class:`BankMismatchError`, and so is a U under which the logits are no longer exact.
        """
        bank.check_matches(self.classifier, check_base_model=check_base_model)
        decomposer = Decomposer(self.classifier, bank.disentangler)
        error = decomposer.exactness_error()
        if not math.isfinite(error) or error > decomposer.tolerance:
            raise BankMismatchError(
                f"under this bank's U the decomposed logits differ from the model's by {error:.1e} (relative), "
                f"above the {self.decomposer.tolerance:.0e} tolerance: U is too badly conditioned to explain "
                "this model exactly; refit with matrix='orthogonal'")
        self.bank = bank
        self._matrix = bank.disentangler.kind
        self._decomposer = (bank.disentangler, decomposer)

    # -- inputs and maps -----------------------------------------------------------------
    def preprocess(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """RGB-coerce ``images`` and run the image processor: (B, C, H, W) on the model's device."""
        return self.classifier.preprocess(images)

    @torch.no_grad()
    def feature_map(self, images: ImageInput | Sequence[ImageInput] | torch.Tensor,
                    transformed: bool = True) -> torch.Tensor:
        """G = U F (or F with ``transformed=False``) for images or a pixel_values tensor: (B, D, H, W)."""
        fmap = self.classifier.feature_map(self.classifier.as_pixel_values(images))
        return torch.einsum("ij,bjhw->bihw", self.U, fmap) if transformed else fmap

    # -- explanations --------------------------------------------------------------------
    # A str is one image (a path), although it is also a Sequence: the first overload wins.
    @overload
    def explain(self, image: ImageInput, target: int | str | None = None,  # type: ignore[overload-overlap]
                top_k: int = 4, batch_size: int = 32,
                true_label: str | int | Sequence[str | int | None] | None = None) -> Explanation: ...

    @overload
    def explain(self, image: Sequence[ImageInput], target: int | str | None = None, top_k: int = 4,
                batch_size: int = 32, true_label: str | int | Sequence[str | int | None] | None = None
                ) -> list[Explanation]: ...

    def explain(self, image: ImageInput | Sequence[ImageInput], target: int | str | None = None, top_k: int = 4,
                batch_size: int = 32, true_label: str | int | Sequence[str | int | None] | None = None
                ) -> Explanation | list[Explanation]:
        """Explain the prediction (or ``target``) for one image, or for a list of them.

        A list returns a list, processed in batches of ``batch_size``. The ``top_k`` channels
        with the most positive evidence ``A'_{k,j} relu(avg G_j)`` get boxes, heatmaps and (with
        a bank) prototypes; all channels' signed contributions are in ``contributions``.
        ``true_label`` (one, or one per image) marks hits and misses on the sheet.
        """
        single = is_single_image(image)
        # not one image, so a sequence (or another iterable) of them: what is_single_image decided
        images: list[object] = [image] if single else list(cast(Iterable[ImageInput], image))
        truths = per_image(true_label, len(images), single)
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        explanations: list[Explanation] = []
        for start in range(0, len(images), batch_size):
            explanations.extend(self.decomposer.explain_batch(images[start: start + batch_size], target, top_k,
                                                              offset=start, bank=self.bank,
                                                              true_labels=truths[start: start + batch_size]))
        return explanations[0] if single else explanations

    def quantus_explain_func(self, channels: str | Sequence[int] = "shown", top_k: int = 4) -> QuantusExplainFunc:
        """EPIC's pixel map as a Quantus ``explain_func(model, inputs, targets) -> (B, 1, H, W)``; see
        :mod:`epic_hf.evaluation.explain_func`. Pass its ``.model`` (the classifier as ``x -> logits``) to Quantus."""
        from .evaluation.explain_func import QuantusExplainFunc

        return QuantusExplainFunc(self.classifier, self.decomposer, channels, top_k)

    def class_channels(self, label: int | str, top_k: int = 8) -> list[tuple[int, float]]:
        """The channels class ``label`` relies on most, as (channel, mean contribution): a global explanation."""
        return self._require_bank().class_channels(label, top_k)

    # -- fitting -------------------------------------------------------------------------
    def fit(self, dataset: DatasetLike, config: FitConfig | None = None, *, output_dir: str | Path | None = None,
            accelerator: Accelerator | None = None, **overrides: Any) -> FitReport:
        """Learn U and mine the prototype bank on ``dataset``; returns a :class:`FitReport`.

        ``dataset``: a ``datasets.Dataset``, ``IterableDataset`` (streaming), ``DatasetDict``, an
        image folder or a Hub dataset id. Settings come from ``config`` (a :class:`FitConfig`)
        with ``overrides`` on top, e.g. ``fit(ds, schedule_steps=3)``. ``output_dir`` keeps
        checkpoints and the final bank: a killed run started again with the same settings resumes.
        """
        config = (config or FitConfig()).replace(**overrides)
        bank, report = run_fit(self.classifier, dataset, config, self._matrix,
                               output_dir=str(output_dir) if output_dir is not None else None, accelerator=accelerator,
                               write_extras=_write_purity_curve)
        self.set_bank(bank, check_base_model=False)
        self.fit_dir = Path(output_dir) if output_dir is not None else None  # its pooled index serves audit()
        self.fit_index, report.kept_index = report.kept_index, None  # kept here, not in the returned report
        return report

    def purity(self, dataset: DatasetLike, config: FitConfig | None = None, **overrides: Any) -> float:
        """Mean purity of the current bank's prototypes, recomputed from ``dataset``."""
        bank = self._require_bank()
        return bank_purity(self.classifier, bank, self.U, dataset, (config or FitConfig()).replace(**overrides))

    def evaluate(self, dataset: DatasetLike, config: EvaluationConfig | None = None, *,
                 output_dir: str | Path | None = None, **overrides: Any) -> EvaluationReport:
        """Purity, class consistency, stability and exact deletion, under U and under U = I (docs/evaluation.md).

        Streams ``dataset`` (anything ``fit`` reads). Settings come from ``config`` (an
        :class:`EvaluationConfig`) with ``overrides`` on top, e.g. ``evaluate(ds, top_k=8,
        label_column="fine_label")``. ``output_dir`` keeps a resumable state and the results. The
        headline numbers go into the bank's config, so the model card of a saved or pushed bank shows them.
        """
        report = evaluate_explainer(self, dataset, config, output_dir=output_dir, **overrides)
        if self.bank is not None:
            self.bank.config.evaluation = report.headline()
            self.bank.config.channel_parts = report.channel_parts() or self.bank.config.channel_parts
        return report

    def audit(self, dataset: DatasetLike, config: AuditConfig | None = None, *, fit_dir: str | Path | None = None,
              output_dir: str | Path | None = None, **overrides: Any) -> AuditReport:
        """Find what the model relies on: fixed-position shortcuts, off-class channels, confusions, suspect labels.

        On the data of this explainer's fit, the fit's pooled index (kept in memory when small, else
        ``fit_dir``, by default the last ``fit``'s ``output_dir``) stands in for a pass over the data. ``output_dir`` gets
        ``audit.json`` and ``audit.html``. Definitions: docs/audit.md.
        """
        return run_audit(self, dataset, config, fit_dir=fit_dir if fit_dir is not None else self.fit_dir,
                         output_dir=output_dir, kept_index=self.fit_index, **overrides)

    # -- the app and its Space (epic_hf.app; gradio is imported only there) ------------------
    def launch(self, *, host: str | None = None, port: int | None = None, share: bool = False,
               title: str | None = None, block: bool = True,
               **launch_kwargs: Any) -> Any:  # Any: a gradio.Blocks (gradio, an optional extra, is imported at run time)
        """Serve a local Gradio page that explains any uploaded image with this bank (docs/app.md).

        Offline: no analytics, system fonts, no share link unless ``share=True``. ``block=False``
        returns the running ``gradio.Blocks`` at once (``.local_url``, ``.close()``). ``audit=DIR`` (an audit's
        output_dir) adds an Audit tab. Needs the ``app`` extra (``pip install "epic_hf[app]"``).
        """
        from .app import launch_app

        self._require_bank()
        return launch_app(self, host=host, port=port, share=share, title=title, block=block, **launch_kwargs)

    def push_to_hub(self, repo_id: str, *, private: bool = False, token: str | None = None,
                    commit_message: str = "Upload EPIC prototype bank", revision: str | None = None,
                    space: str | None = None, space_title: str | None = None) -> str:
        """Upload the bank to ``repo_id``; with ``space="user/name"`` also create or update its Gradio Space.

        The Space's ``app.py`` loads the bank at the commit just pushed, so later pushes of the bank
        do not change what the Space explains until the Space is pushed again. Returns the bank's commit URL.
        """
        info = self._push(repo_id, private=private, token=token, commit_message=commit_message, revision=revision)
        if space is not None:
            from .app import push_space

            push_space(space, repo_id, info.oid, title=space_title, private=private, token=token)
        return str(getattr(info, "commit_url", info))

    # -- persistence (orchestrated by epic_hf.hub.HubMixin) -----------------------------------
    def _require_bank(self) -> PrototypeBank:
        if self.bank is None:
            raise ValueError("this explainer has no prototype bank yet: call explainer.fit(dataset) first")
        return self.bank

    def _save_pretrained(self, directory: Path) -> None:
        self._require_bank()._save_pretrained(directory)

    def _model_card(self, repo_id: str | None) -> ModelCard:
        return self._require_bank()._model_card(repo_id)

    def _publishable(self) -> PrototypeBank:
        return self._require_bank()._publishable()

    def __repr__(self) -> str:
        bank = "no bank" if self.bank is None else repr(self.bank)
        return (f"EpicExplainer({self.classifier.model_type} {self.base_model_name_or_path!r}, "
                f"D={self.num_channels}, matrix={self.matrix!r}, {bank})")


def _write_purity_curve(output_dir: Path, report: FitReport) -> None:
    """``purity.png`` beside the fit's checkpoints; run_fit calls it while the directory's lock is held."""
    curve = render_purity_curve([step.to_dict() for step in report.steps], report.purity_before, report.purity_after)
    with atomic_path(output_dir / "purity.png") as partial:
        curve.save(partial, format="PNG")

