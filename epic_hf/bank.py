"""`PrototypeBank`: what EPIC learned about a model, small enough to ship without the dataset.

For every channel c of the disentangled feature map, the bank keeps its top-N prototypes:
``sample_keys[c]`` (which training images), ``scores[c]`` (``sum_hw G_c``), ``boxes[c]``
(the argmax cell scaled to input pixels) and a JPEG thumbnail of each distinct image. It also
owns the :class:`~epic_hf.disentangle.Disentangler` (S, and the base rotation of a trivialized
fit) from which U is derived, so a bank fully determines the explanations it gives, and the class
evidence of the fit (which channels each class relies on). Files: :mod:`epic_hf.bank_format`;
pictures of a bank: :func:`epic_hf.viz.render_prototype_sheet` and :func:`epic_hf.viz.write_atlas`.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from huggingface_hub import ModelCard
from PIL import Image

from ._version import __version__
from .backbone import FrozenClassifier
from .bank_format import CONFIG_NAME, WEIGHTS_NAME, BankFiles, read_bank_files, write_bank_files
from .config import MAX_THUMBNAIL_SIZE, EpicConfig
from .disentangle import Disentangler
from .errors import BankFormatError, BankMismatchError
from .hub import HubMixin
from .images import decode_jpeg, encode_jpeg
from .model_card import model_card
from .results import PrototypeMatch

logger = logging.getLogger(__name__)

#: Mean absolute pixel difference (0-255 levels) under which two thumbnails are of the same image:
#: re-encoding with another JPEG encoder moves a level or two; another image differs by tens.
THUMBNAIL_TOLERANCE = 3.0


def decode_thumbnail(data: bytes, sample_key: int) -> Image.Image:
    """A bank's thumbnail, its size checked from the header before any pixel is decoded.

    A fit writes thumbnails of at most ``MAX_THUMBNAIL_SIZE`` pixels a side; a bank whose
    thumbnail claims more (a decompression bomb) or is not an image is refused with one error.
    """
    try:
        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size
            if max(width, height) > MAX_THUMBNAIL_SIZE:
                raise BankFormatError(
                    f"the thumbnail of sample key {sample_key} claims {width} x {height} pixels, more than the "
                    f"{MAX_THUMBNAIL_SIZE} a fit writes; the bank is corrupt")
            opened.load()
            return opened.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise BankFormatError(f"the thumbnail of sample key {sample_key} is not a readable image ({error}); the bank "
                              "is corrupt") from None


@dataclass
class PrototypeBank(HubMixin):
    """Per-channel prototypes plus the disentangler state that produced them.

    Attributes:
        sample_keys: (D, N) int64, the dataset keys of each channel's prototypes, best first.
        scores: (D, N) float32, ``sum_hw G_c`` of each prototype.
        boxes: (D, N, 4) int64, ``(x0, y0, x1, y1)`` of the argmax cell, in input pixels.
        S: (D, D) float32, the disentangler parameter (U = exp(S - S^T) or exp(S)).
        matrix: ``"orthogonal"`` or ``"invertible"``.
        thumbnails: sample key -> JPEG bytes of the processed image (shared across channels).
        input_size: (height, width) of the model input the boxes refer to.
        grid_size: (height, width) of the feature map.
        config: what the bank is about (base model, fit settings, dataset, purity).
        disentangler: built from S, matrix and base when the bank is made (not a constructor
            argument): the one owner of U. A bank is a value: its S and base are not trained or
            changed in place; a new fit makes a new bank.
        class_evidence: (num_classes, D) float32 or None, the mean contribution
            ``A'_{k,j} (U v)_j`` of channel j to class k's logit over the samples predicted as k
            (an exact, global "class k relies on channels ..." summary, free from the index pass).
        class_counts: (num_classes,) int64 or None, how many samples were predicted as each class.
        id2label: class index -> label name of the base model.
        sample_names: sample key -> display name (file name, label or key column value).
        base: (D, D) float32 or None: a dynamically trivialized fit's U is ``base . exp(S - S^T)``
            (with S = 0); None for the paper's ``U = exp(S - S^T)``.
    """

    sample_keys: torch.Tensor
    scores: torch.Tensor
    boxes: torch.Tensor
    S: torch.Tensor
    matrix: str
    thumbnails: dict[int, bytes]
    input_size: tuple[int, int]
    grid_size: tuple[int, int]
    config: EpicConfig
    class_evidence: torch.Tensor | None = None
    class_counts: torch.Tensor | None = None
    id2label: dict[int, str] = field(default_factory=dict)
    sample_names: dict[int, str] = field(default_factory=dict)
    base: torch.Tensor | None = None

    def __post_init__(self) -> None:
        dim, count = self.sample_keys.shape
        if self.scores.shape != (dim, count) or self.boxes.shape != (dim, count, 4):
            raise ValueError(
                f"inconsistent bank tensors: sample_keys {tuple(self.sample_keys.shape)}, "
                f"scores {tuple(self.scores.shape)}, boxes {tuple(self.boxes.shape)}"
            )
        if self.S.shape != (dim, dim):
            raise ValueError(f"S must be ({dim}, {dim}) for a bank of {dim} channels, got {tuple(self.S.shape)}")
        self.input_size = (int(self.input_size[0]), int(self.input_size[1]))
        self.grid_size = (int(self.grid_size[0]), int(self.grid_size[1]))
        self.disentangler = Disentangler.frozen(self.S, self.matrix, self.base)
        self.S, self.base = self.disentangler.S.data, self.disentangler.base  # one copy of the state
        if not bool(torch.isfinite(self.disentangler.matrix()).all()):
            raise ValueError("U = exp(S - S^T) (or exp(S)) overflows: S holds values no fit writes")

    @classmethod
    def from_disentangler(cls, disentangler: Disentangler, **fields: Any) -> PrototypeBank:
        """A bank that takes a trained ``disentangler``'s U (copied and frozen: the trainer may go on)."""
        base = disentangler.base
        return cls(S=disentangler.S.detach().cpu().clone(), matrix=disentangler.kind,
                   base=None if base is None else base.detach().cpu().contiguous().clone(), **fields)

    @property
    def num_channels(self) -> int:
        return self.sample_keys.shape[0]

    @property
    def prototypes_per_channel(self) -> int:
        return self.sample_keys.shape[1]

    @property
    def U(self) -> torch.Tensor:
        """The (D, D) disentangling matrix of this bank (computed once: a bank is not changed in place)."""
        return self.disentangler.matrix()

    def thumbnail(self, sample_key: int) -> Image.Image:
        """The prototype image at the bank's input size (boxes apply to it directly)."""
        try:
            data = self.thumbnails[int(sample_key)]
        except KeyError:
            raise KeyError(f"the bank has no thumbnail for sample key {sample_key}") from None
        image = decode_thumbnail(data, int(sample_key))
        height, width = self.input_size
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BICUBIC)
        return image

    def prototypes(self, channel: int, query_key: int | None = None) -> list[PrototypeMatch]:
        """The prototypes of ``channel``, best first; ``query_key`` marks the explained image itself."""
        if not 0 <= channel < self.num_channels:
            raise IndexError(f"channel must be in [0, {self.num_channels - 1}], got {channel}")
        return [
            PrototypeMatch(sample_key=int(key), score=float(score), box=(int(box[0]), int(box[1]), int(box[2]), int(box[3])),
                           _load_image=self._thumbnail_loader(int(key)), name=self.sample_names.get(int(key)),
                           is_query=query_key is not None and int(key) == int(query_key))
            for key, score, box in zip(self.sample_keys[channel].tolist(), self.scores[channel].tolist(),
                                       self.boxes[channel].tolist())
        ]

    def matching_key(self, picture: Image.Image, candidates: Iterable[int]) -> int | None:
        """The first of ``candidates`` whose thumbnail is of ``picture`` (the processed model input), if any.

        The one rule for "is this image the bank's prototype": the picture is encoded as the fit
        encoded its thumbnails (size and JPEG quality of the bank's settings); the same bytes
        match, and so does a thumbnail of the same size whose pixels are on average within
        :data:`THUMBNAIL_TOLERANCE` levels (another JPEG encoder, on another machine, rounds a few
        levels differently; another image differs by tens). Used by explanations, to mark the
        explained image among its prototypes, and by the evaluation, to check that a dataset
        holds the bank's prototype images under the bank's keys.
        """
        fit = self.config.fit
        data = encode_jpeg(picture, fit.thumbnail_size, fit.thumbnail_quality)
        decoded: np.ndarray | None = None
        for key in candidates:
            stored = self.thumbnails.get(int(key))
            if stored is None:
                continue
            if stored == data:
                return int(key)
            decoded = np.asarray(decode_jpeg(data), dtype=np.int16) if decoded is None else decoded
            theirs = np.asarray(decode_thumbnail(stored, int(key)), dtype=np.int16)
            if theirs.shape == decoded.shape and float(np.abs(theirs - decoded).mean()) <= THUMBNAIL_TOLERANCE:
                return int(key)
        return None

    def _thumbnail_loader(self, key: int) -> Callable[[], Image.Image]:
        return lambda: self.thumbnail(key)

    def class_channels(self, label: int | str, top_k: int = 8) -> list[tuple[int, float]]:
        """(channel, mean contribution) of the channels class ``label`` relies on most, from the fit's class evidence.

        Exact and global: the mean of ``A'_{k,j} (U v)_j`` over the samples the model predicted as k.
        """
        if self.class_evidence is None:
            raise ValueError("this bank has no class evidence (it was fit by an older epic_hf); fit it again")
        index = self.class_index(label)
        values, channels = self.class_evidence[index].topk(min(top_k, self.num_channels))
        return [(int(c), float(v)) for c, v in zip(channels, values)]

    def channel_part(self, channel: int) -> tuple[str, float] | None:
        """(best part, its part purity) of ``channel``, where an evaluation on part-annotated data named it.

        Recorded by ``explainer.evaluate(..., parts=True)`` in ``config.channel_parts`` (saved with the
        bank), so that pictures and pages can say what a channel's prototypes land on.
        """
        named = self.config.channel_parts.get(str(int(channel)))
        return (str(named[0]), float(named[1])) if named else None

    def class_index(self, label: int | str) -> int:
        if isinstance(label, str):
            by_name = {name: index for index, name in self.id2label.items()}
            if label not in by_name:
                raise ValueError(f"unknown class {label!r}; classes include {sorted(by_name)[:5]}")
            return by_name[label]
        num_classes = self.class_evidence.shape[0] if self.class_evidence is not None else len(self.id2label)
        if isinstance(label, bool) or not 0 <= int(label) < num_classes:
            raise ValueError(f"class index must be in [0, {num_classes - 1}], got {label!r}")
        return int(label)

    def check_matches(self, classifier: FrozenClassifier, check_base_model: bool = True) -> None:
        """Refuse a bank fit on another model: D, model_type and (by fingerprint or name) the weights must agree."""
        config = self.config
        if config.split_cls != classifier.split_cls:
            raise BankMismatchError(
                f"the bank was fit {'with' if config.split_cls else 'without'} split_cls, and this classifier was "
                f"loaded {'with' if classifier.split_cls else 'without'} it: load it with "
                f"split_cls={config.split_cls} (EpicExplainer.from_pretrained(<bank>) does)")
        if self.num_channels != classifier.num_channels:
            raise BankMismatchError(
                f"the bank has {self.num_channels} channels but this model's feature map has "
                f"{classifier.num_channels}: it was fit on another model")
        if config.model_type not in ("unknown", classifier.model_type):
            raise BankMismatchError(
                f"the bank was fit on a {config.model_type!r} model, not on this {classifier.model_type!r} model")
        if not check_base_model:
            return
        if config.base_model_fingerprint:
            if config.base_model_fingerprint != classifier.fingerprint:
                raise BankMismatchError(
                    f"the bank was fit on base model {config.base_model_name_or_path!r}, and this "
                    f"{classifier.model_type!r} model ({classifier.reference.name_or_path!r}) has other weights "
                    "(their fingerprints differ): pair the bank with the classifier it was fit on")
            return
        if not same_model_name(config.base_model_name_or_path, classifier.reference.name_or_path):
            raise BankMismatchError(
                f"the bank was fit on base model {config.base_model_name_or_path!r}, not "
                f"{classifier.reference.name_or_path!r}; load it with EpicExplainer.from_pretrained(<bank>) so "
                "that its own base model is loaded, or pass base_model=<where that model is now>")

    # -- persistence (orchestrated by epic_hf.hub.HubMixin) ------------------------------------
    def _save_pretrained(self, directory: Path) -> None:
        self.config.library_version = __version__
        self.config.num_channels, self.config.prototypes_per_channel = self.num_channels, self.prototypes_per_channel
        self.config.matrix, self.config.grid_size, self.config.input_size = self.matrix, self.grid_size, self.input_size
        with torch.no_grad():
            tensors = {"S": self.S.float(), "U": self.U.float(), "sample_keys": self.sample_keys.to(torch.int64),
                       "scores": self.scores.float(), "boxes": self.boxes.to(torch.int64)}
        if self.base is not None and bool(self.S.any()):  # with S = 0 (a trivialized fit) U is the base itself
            tensors["U_base"] = self.base.float()
        if self.class_evidence is not None and self.class_counts is not None:
            tensors["class_evidence"] = self.class_evidence.float()
            tensors["class_counts"] = self.class_counts.to(torch.int64)
        write_bank_files(directory, BankFiles(config=self.config, tensors=tensors, thumbnails=self.thumbnails,
                                              id2label=self.id2label, sample_names=self.sample_names,
                                              u_is_base=self.base is not None and "U_base" not in tensors))
        logger.info("saved EPIC bank (%d channels x %d prototypes) to %s", self.num_channels,
                    self.prototypes_per_channel, directory)

    def _model_card(self, repo_id: str | None) -> ModelCard:
        return model_card(self.config, repo_id)

    def _publishable(self) -> PrototypeBank:
        """This bank as the Hub gets it: no local path of this machine (see :func:`published_config`)."""
        return dataclasses.replace(self, config=published_config(self.config))

    @classmethod
    def _from_pretrained(cls, resolve: Callable[[str], Path], name_or_path: str | Path, revision: str | None,
                         **hub_kwargs: Any) -> PrototypeBank:
        files = read_bank_files(_required(resolve, name_or_path, CONFIG_NAME), _required(resolve, name_or_path,
                                                                                          WEIGHTS_NAME))
        tensors, config = files.tensors, files.config
        try:
            return cls(sample_keys=tensors["sample_keys"], scores=tensors["scores"], boxes=tensors["boxes"],
                       S=tensors["S"], matrix=config.matrix, thumbnails=files.thumbnails, input_size=config.input_size,
                       grid_size=config.grid_size, config=config, class_evidence=tensors.get("class_evidence"),
                       class_counts=tensors.get("class_counts"), id2label=files.id2label,
                       sample_names=files.sample_names,
                       base=tensors["U"] if files.u_is_base else tensors.get("U_base"))
        except (KeyError, ValueError) as error:
            raise BankFormatError(f"the bank is inconsistent: {error}") from None

    def __repr__(self) -> str:
        config = self.config
        purity = f", purity {config.purity_after:.3f}" if config.purity_after is not None else ""
        base = config.base_model_name_or_path
        return (f"PrototypeBank({self.num_channels} channels x {self.prototypes_per_channel} prototypes, "
                f"matrix={self.matrix!r}, {len(self.thumbnails)} thumbnails, base model {base!r}{purity})")


def _required(resolve: Callable[[str], Path], name_or_path: str | Path, filename: str) -> Path:
    path = resolve(filename)
    if not path.is_file():
        raise BankFormatError(f"{name_or_path} is not an EPIC bank directory: {filename} is missing")
    return path


def _is_local_path(name: str | None) -> bool:
    if not name:
        return False
    return (name.startswith(("/", "./", "../", "~", ".\\")) or "\\" in name or name.count("/") > 1
            or Path(name).expanduser().is_absolute() or Path(name).expanduser().exists())


def published_config(config: EpicConfig) -> EpicConfig:
    """A copy of ``config`` that names nothing by this machine's paths, for a push to the Hub.

    A base model in a local folder is named by its weights fingerprint only (whoever loads the
    bank passes ``base_model=``, and the fingerprint checks it); a local dataset folder or file by
    its own name, without its parent folders. Both are said in a warning, so nothing is dropped
    unseen. Hub ids are kept as they are.
    """
    published = copy.deepcopy(config)
    if _is_local_path(config.base_model_name_or_path):
        logger.warning("the base model is the local folder %s: the pushed bank names it by its weights fingerprint "
                       "only (load it with base_model=<that model>)", config.base_model_name_or_path)
        published.base_model_name_or_path, published.base_model_revision = None, None
    name = (config.dataset or {}).get("name")
    if isinstance(name, str) and _is_local_path(name):
        published.dataset = {**config.dataset, "name": Path(name).name}
        logger.warning("the dataset is the local %s: the pushed bank names it %r", name, Path(name).name)
    return published


def same_model_name(a: str | None, b: str | None) -> bool:
    """Whether two references name the same model: equal Hub ids, or the same folder however spelled."""
    if not a or not b:
        return True
    if str(a) == str(b):
        return True
    first, second = Path(str(a)).expanduser(), Path(str(b)).expanduser()
    if first.exists() and second.exists():
        return first.resolve() == second.resolve()
    return False
