"""The two typed configs: what a fit does (`FitConfig`) and what a bank is about (`EpicConfig`).

`FitConfig` is the one source of every fit setting: its default, allowed values, help text,
whether the default is the paper's, and whether it changes the result (and so belongs in a
checkpoint's fingerprint). ``fit``, the CLI's flags and the checkpoints are all derived from it.

`EpicConfig` is the typed form of a bank's ``epic_config.json``: the base model it explains,
the shape of the feature map, the matrix kind, the fit that made it and how well it did. Each of
its fields declares the checks a loaded bank's value must pass (``_fact``), read by the same
:func:`validate_settings`: a field checked by hand is one a release can forget (``split_cls`` was).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .aliases import JSONDict
from .errors import BankFormatError, shown

if TYPE_CHECKING:
    from _typeshed import DataclassInstance
T = TypeVar("T")
logger = logging.getLogger(__name__)

#: The version of ``epic_config.json`` this release writes and reads.
FORMAT_VERSION = 1
#: The largest thumbnail side a fit writes (and a bank may hold): large enough for any sheet.
MAX_THUMBNAIL_SIZE = 1024
#: Keys that banks written by epic_hf 0.1.0 kept among their fit settings: model facts that now
#: live in the bank config itself. They are dropped without a warning.
LEGACY_FIT_KEYS = frozenset({"base_model_revision", "matrix", "model_type", "num_channels"})


def known_values(cls: type, values: JSONDict, where: str, ignored: Iterable[str] = ()) -> JSONDict:
    """The entries of ``values`` that are fields of dataclass ``cls``; any other key is logged, not dropped silently.

    As PEFT does for adapter configs: a key a newer release wrote, or a typo in a hand-edited
    file, is named in a warning, so that a setting that was meant to apply is not lost unseen.
    """
    known = {spec.name for spec in fields(cls)}
    unknown = sorted(set(values) - known - set(ignored))
    if unknown:
        logger.warning("%s: ignoring unknown key(s) %s (this epic_hf knows %s)", where, shown(unknown, 200), sorted(known))
    return {k: v for k, v in values.items() if k in known}


def _setting(default: T, help: str, *, group: str, choices: tuple | None = None, paper: bool = False,
             result: bool = True, minimum: float | None = None, maximum: float | None = None) -> T:
    """A config field with its documentation attached (read by the CLI flags, the docs and the validation)."""
    return field(default=default, metadata={
        "help": help, "group": group, "choices": choices, "paper": paper, "result": result, "minimum": minimum,
        "maximum": maximum})


def _section(cls: type[T], help: str) -> T:
    """A field holding a nested settings dataclass (``FitConfig.data``): its fields are flags of their own."""
    return field(default_factory=cls, metadata={"help": help, "section": cls})


def is_section(spec: dataclasses.Field) -> bool:
    return "section" in spec.metadata


def setting_fields(cls: type) -> list[dataclasses.Field]:
    """Every setting of a settings dataclass, a section's own fields in its place: what becomes a flag."""
    found: list[dataclasses.Field] = []
    for spec in fields(cls):
        found.extend(setting_fields(spec.metadata["section"]) if is_section(spec) else [spec])
    return found


def validate_settings(config: DataclassInstance) -> None:
    """Check every field of a settings dataclass (or of EpicConfig) against its metadata, before it is used.

    Choices are enforced; numbers must be finite (``inf`` and ``nan`` are refused: a learning rate
    of ``nan`` would train a bank of NaNs), at least ``minimum``, at most ``maximum``, and whole
    where the annotation says ``int``; a bank's field may also declare a shape (``_fact``).
    ``None`` passes where it is the field's default, or where the field says it may be None.
    """
    hints = typing.get_type_hints(type(config))
    for spec in fields(config):
        if is_section(spec):
            continue
        value, meta = getattr(config, spec.name), spec.metadata
        if "choices" not in meta:  # a programming error, not a bad file: never caught as a bank's fault
            raise RuntimeError(f"{type(config).__name__}.{spec.name} declares no checks: use _setting(...) or _fact(...)")
        if value is None and (spec.default is None or meta.get("optional")):
            continue
        _check_shape(spec.name, value, meta.get("check"))
        choices = meta["choices"]
        if choices is not None and value not in choices:
            raise ValueError(f"{spec.name} must be one of {choices}, got {shown(value)}")
        if meta["minimum"] is None and meta["maximum"] is None:
            continue
        whole = int in typing.get_args(hints[spec.name]) or hints[spec.name] is int
        kinds = (int,) if whole else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
            kind = "an integer" if whole else "a finite number"
            raise ValueError(f"{spec.name} must be {kind}, got {shown(value)}")
        if meta["minimum"] is not None and value < meta["minimum"]:
            raise ValueError(f"{spec.name} must be at least {meta['minimum']}, got {shown(value)}")
        if meta["maximum"] is not None and value > meta["maximum"]:
            raise ValueError(f"{spec.name} must be at most {meta['maximum']}, got {shown(value)}")


def flat_settings(config: DataclassInstance, *, result_only: bool = False) -> JSONDict:
    """Every setting as one flat mapping (a section's fields beside the others), optionally only those that
    change the result: what a checkpoint's fingerprint records."""
    values: JSONDict = {}
    for spec in fields(config):
        if is_section(spec):
            values.update(flat_settings(getattr(config, spec.name), result_only=result_only))
        elif not result_only or spec.metadata["result"]:
            values[spec.name] = getattr(config, spec.name)
    return values


@dataclass(frozen=True)
class DataConfig:
    """How to read a dataset: shared by :class:`FitConfig` and the evaluation's settings."""

    split: str | None = _setting(None, "dataset split; by default its only split, or 'train'", group="data")
    image_column: str | None = _setting(
        None, "column holding the images (or, in a CSV/JSON-lines/Parquet file, their paths); by default the "
        "first Image column, else a column named image, path, file_name or filepath", group="data")
    key_column: str | None = _setting(
        None, "integer column whose values become sample keys; by default the row index or stream position",
        group="data")
    label_column: str | None = _setting(
        None, "column naming each sample in prototype captions and giving the classes of the evaluation's "
        "class consistency (a ClassLabel shows its name); by default 'label' when the dataset has one",
        group="data", result=False)
    streaming: bool = _setting(False, "read the dataset as a stream", group="data", result=False)

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.name == "streaming":
                if not isinstance(value, bool):
                    raise ValueError(f"streaming must be True or False, got {shown(value)}")
            elif value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{spec.name} must be a column or split name, got {shown(value)}")


class DataSettings:
    """What every settings dataclass that reads a dataset shares (FitConfig, EvaluationConfig, AuditConfig):
    a ``data`` section, validation on construction, ``replace``, ``to_dict`` and ``from_dict``."""

    data: DataConfig
    what: typing.ClassVar[str] = "settings"  # names the settings in errors: "fit", "evaluation", "audit"
    legacy_keys: typing.ClassVar[frozenset[str]] = frozenset()  # keys older releases wrote, dropped unsaid

    def __post_init__(self) -> None:
        if not isinstance(self.data, DataConfig):
            raise ValueError(f"data must be a DataConfig, got {type(self.data).__name__}")
        validate_settings(cast("DataclassInstance", self))

    def replace(self, **changes: Any) -> typing.Self:
        """A validated copy with ``changes``; data settings may be given flat (``replace(split="test", lr=0.01)``
        sets ``data.split`` and ``lr``), and an unknown name raises ``TypeError`` listing the known ones."""
        own = {spec.name for spec in fields(cast("DataclassInstance", self))}
        data_names = {spec.name for spec in fields(DataConfig)}
        unknown = sorted(set(changes) - own - data_names)
        if unknown:
            raise TypeError(f"unknown {self.what} setting {shown(unknown[0])}; known settings: "
                            f"{sorted(own - {'data'}) + sorted(data_names)}")
        direct = {k: v for k, v in changes.items() if k in own}
        routed = {k: v for k, v in changes.items() if k not in own}
        if routed:
            direct["data"] = dataclasses.replace(cast(DataConfig, direct.get("data", self.data)), **routed)
        return cast(typing.Self, dataclasses.replace(cast("DataclassInstance", self), **direct))

    def to_dict(self) -> JSONDict:
        return dataclasses.asdict(cast("DataclassInstance", self))

    @classmethod
    def from_dict(cls, values: JSONDict, where: str | None = None) -> typing.Self:
        """Read settings written by :meth:`to_dict`, or with the data settings flat (as earlier fits wrote
        them). Unknown keys are named in a warning; invalid values raise ``ValueError`` naming the setting."""
        where = where or f"{cls.what} settings"
        values = dict(values)
        data = values.pop("data", {})
        if not isinstance(data, dict):
            raise TypeError(f"'data' must be an object of data settings, got {type(data).__name__}")
        data_names = {spec.name for spec in fields(DataConfig)}
        data = {**{k: values.pop(k) for k in list(values) if k in data_names}, **data}
        known = known_values(cls, values, where, ignored=cls.legacy_keys)
        return cls(data=DataConfig(**known_values(DataConfig, data, where)),  # type: ignore[call-arg]
                   **{k: v for k, v in known.items() if k != "data"})


@dataclass(frozen=True)
class FitConfig(DataSettings):
    """Every setting of :meth:`EpicExplainer.fit`. Defaults marked ``paper`` follow the EPIC paper.

    Construct with keywords, or pass keywords straight to ``fit``; ``replace(**changes)`` returns
    a validated copy. How the dataset is read is its :class:`DataConfig`, ``data``; its fields may
    be given flat to ``replace`` and ``fit`` (``fit(ds, split="train")``).
    """

    what = "fit"
    legacy_keys = LEGACY_FIT_KEYS

    data: DataConfig = _section(DataConfig, "how to read the dataset")
    # the method
    prototypes_per_channel: int = _setting(5, "prototypes kept per channel in the final bank", group="method",
                                           paper=True, minimum=1)
    schedule: str = _setting("linear", "how the prototypes per channel shrink over the schedule steps",
                             group="method", choices=("linear", "exponential", "logarithmic"), paper=True)
    schedule_start: int = _setting(100, "prototypes per channel at the first schedule step", group="method",
                                   paper=True, minimum=1)
    schedule_end: int = _setting(5, "prototypes per channel the schedule shrinks to", group="method", paper=True,
                                 minimum=1)
    schedule_steps: int = _setting(10, "schedule steps, each a re-mine of the prototypes then training",
                                   group="method", paper=True, minimum=1)
    epochs_per_step: int = _setting(2, "training epochs over the re-mined pairs at each step", group="method",
                                    paper=True, minimum=1)
    lr: float = _setting(1e-3, "Adam learning rate on S", group="method", paper=True, minimum=0)
    weight_decay: float = _setting(1e-5, "Adam weight decay on S", group="method", paper=True, minimum=0)
    train_batch_size: int = _setting(
        512, "(image, channel) pairs per optimizer step; each step costs one D x D linear solve (dynamic "
        "trivialization) or one matrix exponential and its gradient (trivialization='none', invertible U)",
        group="method", paper=True, minimum=1)
    seed: int = _setting(0, "seed of the pair shuffling", group="method")
    trivialization: str = _setting(
        "dynamic", "orthogonal U only: 'dynamic' trains in the tangent space at the current U and moves U by a "
        "Cayley rotation after every optimizer step (no matrix exponential or its gradient); 'none' is the "
        "paper's Adam on S through matrix_exp", group="method", choices=("dynamic", "none"))
    max_condition: float = _setting(
        1e4, "invertible U only: a bound on cond(U); S is scaled back whenever a cheap norm bound could exceed it",
        group="method", minimum=1.0)
    # compute
    batch_size: int = _setting(64, "images per backbone batch", group="compute", result=False, minimum=1)
    mixed_precision: str | None = _setting(None, "precision of the backbone (accelerate)", group="compute",
                                           choices=("no", "fp16", "bf16"), result=False)
    feature_cache_mb: float = _setting(2048, "memory for cached feature maps; beyond it they are recomputed",
                                       group="compute", result=False, minimum=0)
    index_memory_mb: float = _setting(4096, "memory for the pooled index; beyond it it is memory-mapped",
                                      group="compute", result=False, minimum=0)
    # the bank
    thumbnail_size: int = _setting(112, "long side of the bank's prototype thumbnails, in pixels", group="bank",
                                   minimum=8, maximum=MAX_THUMBNAIL_SIZE)
    thumbnail_quality: int = _setting(80, "JPEG quality of the thumbnails", group="bank", minimum=1, maximum=100)

    def result_settings(self) -> JSONDict:
        """The settings that change the fitted bank: what a checkpoint must agree on to resume."""
        return flat_settings(self, result_only=True)


#: The largest model input side (and feature-grid side) a bank may declare: beyond any classifier's.
MAX_INPUT_SIDE = 8192
MATRIX_NAMES = ("orthogonal", "invertible")
STEP_FIELDS = ("prototypes", "purity_before", "purity_after")
#: Purity is in [-1, 1]; float32 rounding may step past by a few ulps.
PURITY_BOUND = 1.001


def _pair_of_sides(name: str, value: object) -> tuple[int, int]:
    """(height, width) of whole numbers in [1, MAX_INPUT_SIDE]; anything else is a corrupt bank."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{name} must be [height, width], got {shown(value)}")
    for side in value:
        if isinstance(side, bool) or not isinstance(side, int) or not 1 <= side <= MAX_INPUT_SIDE:
            raise ValueError(f"{name} must hold whole numbers from 1 to {MAX_INPUT_SIDE}, got {shown(value)}")
    return int(value[0]), int(value[1])


def _number(name: str, value: object, low: float, high: float, whole: bool = False) -> None:
    kinds, kind = ((int,), "a whole number") if whole else ((int, float), "a finite number")
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name} must be {kind} from {low} to {high}, got {shown(value)}")


def _fact(check: str | None = None, default: object = dataclasses.MISSING, *, choices: tuple | None = None,
          minimum: float | None = None, maximum: float | None = None, optional: bool = False,
          factory: Callable[[], object] | None = None) -> Any:  # Any: like field(), whatever its field declares
    """A field of :class:`EpicConfig` with the checks a loaded value must pass, read by validate_settings: a
    ``check`` of shape (text, flag, sides, object, steps, fit), ``choices``, ``minimum``/``maximum``."""
    metadata = {"check": check, "choices": choices, "minimum": minimum, "maximum": maximum, "optional": optional}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _check_shape(name: str, value: object, check: str | None) -> None:
    """The shape a bank's field declares (``_fact``): sizes bounded, so a hostile file must not allocate."""
    if check == "text" and not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {shown(value)}")
    if check == "flag" and not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {shown(value)}")
    if check == "sides":
        _pair_of_sides(name, value)
    if check == "object" and not isinstance(value, dict):
        raise ValueError(f"{name} must be an object, got {type(value).__name__}")
    if check == "fit" and not isinstance(value, FitConfig):
        raise ValueError(f"{name} must be fit settings, got {type(value).__name__}")
    if check == "steps" and not isinstance(value, list):
        raise ValueError(f"steps must be a list of schedule steps, got {type(value).__name__}")
    for position, step in enumerate(value if check == "steps" and isinstance(value, list) else []):
        if not isinstance(step, dict) or any(key not in step for key in STEP_FIELDS):
            raise ValueError(f"steps[{position}] must be an object with {list(STEP_FIELDS)}, got {shown(step)}")
        _number(f"steps[{position}].prototypes", step["prototypes"], 1, 2**31, whole=True)
        for key in ("purity_before", "purity_after"):
            _number(f"steps[{position}].{key}", step[key], -PURITY_BOUND, PURITY_BOUND)


@dataclass
class EpicConfig:
    """What a bank is about: the typed ``epic_config.json`` of an EPIC repo.

    ``base_model_name_or_path`` is a Hub id (with ``base_model_revision`` its resolved commit) or,
    for a local classifier, the absolute path it had when the bank was saved;
    ``base_model_fingerprint`` recognises the same weights wherever they are later.
    """

    model_type: str = _fact("text", optional=True)
    num_channels: int = _fact(minimum=1, maximum=2**20)
    prototypes_per_channel: int = _fact(minimum=1, maximum=2**16)
    matrix: str = _fact(choices=MATRIX_NAMES)
    grid_size: tuple[int, int] = _fact("sides")
    input_size: tuple[int, int] = _fact("sides")
    base_model_name_or_path: str | None = _fact("text", None)
    base_model_revision: str | None = _fact("text", None)
    base_model_fingerprint: str | None = _fact("text", None)
    fit: FitConfig = _fact("fit", factory=FitConfig)
    dataset: JSONDict = _fact("object", factory=dict)
    purity_before: float | None = _fact(None, None, minimum=-PURITY_BOUND, maximum=PURITY_BOUND)
    purity_after: float | None = _fact(None, None, minimum=-PURITY_BOUND, maximum=PURITY_BOUND)
    num_samples: int | None = _fact(None, None, minimum=0, maximum=2**62)
    num_skipped: int | None = _fact(None, None, minimum=0, maximum=2**62)
    condition_number: float | None = _fact(None, None, minimum=1.0, maximum=1e300)
    #: CLS-token models: the patches' mean share of |evidence| over the data
    patch_share: float | None = _fact(None, None, minimum=0.0, maximum=1.0)
    #: DINOv2 loaded with split_cls=True: its CLS half split over the tokens (2D channels)
    split_cls: bool = _fact("flag", False)
    steps: list[JSONDict] = _fact("steps", factory=list)
    evaluation: JSONDict = _fact("object", factory=dict)
    channel_parts: JSONDict = _fact("object", factory=dict)  # channel -> [best part, part purity]; bank_format checks
    library_version: str | None = _fact("text", None)
    format_version: int = _fact(None, FORMAT_VERSION, minimum=FORMAT_VERSION, maximum=FORMAT_VERSION)

    def to_dict(self) -> JSONDict:
        values = dataclasses.asdict(self)
        values["grid_size"], values["input_size"] = list(self.grid_size), list(self.input_size)
        return {"format": "epic", **values}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: object) -> EpicConfig:
        """Validate and read a config written by this or an earlier release."""
        if not isinstance(values, dict) or values.get("format") != "epic":
            raise BankFormatError("epic_config.json is not an EPIC bank config (missing format='epic')")
        version = values.get("format_version")
        if version != FORMAT_VERSION:
            raise BankFormatError(
                f"the bank uses format version {shown(version)}; this epic_hf reads version {FORMAT_VERSION}. "
                "Upgrade epic_hf (pip install -U epic_hf) to read banks written by a newer release.")
        values = known_values(cls, values, "epic_config.json", ignored=("format",))
        try:
            fit = values.get("fit", {})
            if not isinstance(fit, dict):
                raise TypeError(f"'fit' must be an object of fit settings, got {type(fit).__name__}")
            config = cls(**{**values, "fit": FitConfig.from_dict(fit, "epic_config.json's fit settings")})
            validate_settings(config)  # every field, by the checks it declares
            config.grid_size = _pair_of_sides("grid_size", config.grid_size)
            config.input_size = _pair_of_sides("input_size", config.input_size)
            if config.grid_size[0] > config.input_size[0] or config.grid_size[1] > config.input_size[1]:
                raise ValueError(f"grid_size {list(config.grid_size)} exceeds input_size {list(config.input_size)}")
            for name, value in config.evaluation.items():
                if value is not None:
                    _number(f"evaluation.{name}", value, -1e300, 1e300)
        except (TypeError, ValueError) as error:
            raise BankFormatError(f"epic_config.json is incomplete or inconsistent ({error})") from None
        return config

    @classmethod
    def from_json(cls, text: str) -> EpicConfig:
        try:
            values = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise BankFormatError(f"epic_config.json is not valid JSON ({error}); the bank is corrupt") from None
        return cls.from_dict(values)

