"""What a user holds, made an :class:`~epic_hf.data.source.ImageSource`: datasets objects, folders, files, Hub ids.

Accepted: a ``datasets.Dataset``, ``IterableDataset`` or ``DatasetDict``; a folder of images
(class subfolders give labels, as ``imagefolder`` reads them); a folder written by
``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``; a Parquet, CSV or JSON-lines file
whose image column holds images or paths (relative paths are read from the file's folder);
a CUB-200-2011 folder as it ships (``cub.py``: labels, split, boxes and part keypoints from its text
files); and a Hub dataset id.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError

from ..config import DataConfig
from ..errors import EmptyDatasetError, HubUnreachableError
from ..hub import hub_endpoint, hub_is_reachable
from .cub import cub_root, load_cub
from .source import ImageSource

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

#: What a fit or an evaluation reads: a ``datasets`` object, or a path or Hub id that
#: :func:`resolve_dataset` opens as one (see the module docstring for what a path may be).
DatasetLike: TypeAlias = (
    "datasets.Dataset | datasets.IterableDataset | datasets.DatasetDict | datasets.IterableDatasetDict"
    " | str | os.PathLike[str]"
)
#: What ``datasets`` loads from a path or a Hub id: one split, or a dict of them.
Loaded: TypeAlias = "datasets.Dataset | datasets.IterableDataset | datasets.DatasetDict | datasets.IterableDatasetDict"

#: File suffixes read with a ``datasets`` packaged builder, by builder name.
FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".tsv": "csv", ".jsonl": "json", ".json": "json"}
#: Column names taken to hold image paths in a file without an Image column, in order of preference.
PATH_COLUMNS = ("image", "img", "image_path", "path", "file_name", "filename", "filepath", "file")
#: The marker files ``save_to_disk`` writes: a Dataset's, then a DatasetDict's.
SAVED_DATASET_FILES = ("state.json", "dataset_dict.json")


def open_source(dataset: DatasetLike, data: DataConfig | None = None) -> ImageSource:
    """The :class:`ImageSource` that ``data`` (a :class:`DataConfig`) says how to read from ``dataset``."""
    data = data or DataConfig()
    return resolve_dataset(dataset, split=data.split, image_column=data.image_column, key_column=data.key_column,
                           streaming=data.streaming, label_column=data.label_column)


def image_suffixes() -> frozenset[str]:
    """The file suffixes ``imagefolder`` reads as images (lower case, with the dot)."""
    try:
        from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

        return frozenset(suffix.lower() for suffix in ImageFolder.EXTENSIONS)
    except (ImportError, AttributeError):  # another datasets layout: the common ones
        return frozenset((".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"))


def check_image_folder(path: str | os.PathLike[str]) -> None:
    """Refuse a folder that holds no image file, in it or in any subfolder, naming it and what to put there.

    Checked before anything else runs (the CLI calls it before a model loads), because
    ``datasets`` reports such a folder as ``doesn't contain any data files`` or ``Instruction
    "train" corresponds to no data!``, which names neither the folder nor the fix. A folder
    written by ``save_to_disk`` is not an image folder: its rows are counted once it is loaded.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir() or any((folder / marker).is_file() for marker in SAVED_DATASET_FILES):
        return
    suffixes = image_suffixes()
    if any(item.suffix.lower() in suffixes and item.is_file() for item in folder.rglob("*")):
        return
    raise EmptyDatasetError(
        f"the folder {str(folder)!r} holds no image files (.jpg, .png, ...), in it or in its subfolders: put the "
        "images there (one subfolder per class, if they have labels) and run the command again")


def _load_path(path: Path, streaming: bool) -> tuple[Loaded, str, Path | None]:
    """(loaded dataset or dict, its name, the folder relative image paths are read from) of a local path."""
    import datasets

    if path.is_dir():
        resolved = path.resolve()  # one spelling per folder, so that a checkpoint recognises its data
        if any((resolved / marker).is_file() for marker in SAVED_DATASET_FILES):
            try:
                loaded = datasets.load_from_disk(str(resolved))
            except IndexError:  # datasets cannot load a saved split of 0 rows (0 arrow files)
                if not _saved_split_is_empty(resolved):
                    raise
                raise EmptyDatasetError(_no_rows(str(resolved), "saved dataset")) from None
            if streaming:
                loaded = (loaded.to_iterable_dataset() if isinstance(loaded, datasets.Dataset) else
                          datasets.IterableDatasetDict({k: v.to_iterable_dataset() for k, v in loaded.items()}))
            return loaded, str(resolved), None
        cub = cub_root(resolved)
        if cub is not None:
            loaded = load_cub(cub)
            if streaming:
                loaded = datasets.IterableDatasetDict({k: v.to_iterable_dataset() for k, v in loaded.items()})
            return loaded, str(cub), None
        check_image_folder(resolved)
        return datasets.load_dataset("imagefolder", data_dir=str(resolved), streaming=streaming), str(resolved), None
    builder = FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise ValueError(
            f"{str(path)!r} is a file epic_hf cannot read as a dataset; pass a folder of images, a folder written by "
            f"save_to_disk, a {'/'.join(sorted(FILE_BUILDERS))} file, a Hub dataset id or a Dataset")
    resolved = path.resolve()
    options = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
    try:
        loaded = datasets.load_dataset(builder, data_files=str(resolved), streaming=streaming, **options)
    except ValueError as error:
        if "corresponds to no data" not in str(error):
            raise
        raise EmptyDatasetError(_no_rows(str(resolved), "file")) from None
    return loaded, str(resolved), resolved.parent


def _load_hub(name: str, revision: str | None, streaming: bool) -> tuple[Loaded, str | None]:
    """(the loaded dataset, the commit it was loaded at): ``revision`` resolved to a commit first.

    Why resolve: a stream has no arrow fingerprint, so its checkpoint identity is its name and
    revision; a branch (``main`` by default) moves, and a resume that read the branch's newer
    data would mix two datasets in one fit. Loading at the resolved commit also makes the
    recorded revision the data that was read. Offline, the revision stays as given.
    """
    import datasets

    if not constants.HF_HUB_OFFLINE and not hub_is_reachable():
        raise HubUnreachableError(
            f"cannot reach the Hugging Face Hub at {hub_endpoint()} to load the dataset {name}; set "
            "HF_HUB_OFFLINE=1 to use a cached copy, or pass a local folder of images")
    if not constants.HF_HUB_OFFLINE:
        try:
            revision = HfApi().dataset_info(name, revision=revision).sha or revision
        except HfHubHTTPError as error:  # load_dataset below says what is wrong, in its own words
            logger.debug("could not resolve %s at %s to a commit: %s", name, revision or "main", error)
    return datasets.load_dataset(name, revision=revision, streaming=streaming), revision


def _find_image_column(features: datasets.Features | None, columns: list[str], image_column: str | None) -> str:
    import datasets

    if image_column is not None:
        if columns and image_column not in columns:
            raise ValueError(f"image_column {image_column!r} is not a column of the dataset; columns: {columns}")
        return image_column
    if features is not None:
        found = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]
        if found:
            return found[0]
        paths = [name for name in PATH_COLUMNS if _holds_text_or_bytes(features.get(name))]
        if paths:
            return paths[0]
    raise ValueError(
        f"the dataset has no Image column (columns: {columns or 'unknown'}); pass image_column=<name> "
        "naming the column that holds the images or their paths"
    )


def _holds_text_or_bytes(feature: object) -> bool:
    import datasets

    return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string", "binary",
                                                                     "large_binary")


def _pick_split(dataset_dict: datasets.DatasetDict | datasets.IterableDatasetDict,
                split: str | None) -> tuple[datasets.Dataset | datasets.IterableDataset, str]:
    splits = list(dataset_dict.keys())
    if split is None:
        if len(splits) == 1:
            return dataset_dict[splits[0]], splits[0]
        if "train" in splits:
            return dataset_dict["train"], "train"
        raise ValueError(f"the dataset has several splits {splits}; pass split=<one of them>")
    if split not in dataset_dict:
        raise ValueError(f"split {split!r} not found; the dataset has splits {splits}")
    return dataset_dict[split], split


def resolve_dataset(
    dataset: DatasetLike,
    split: str | None = None,
    image_column: str | None = None,
    key_column: str | None = None,
    streaming: bool = False,
    revision: str | None = None,
    label_column: str | None = None,
) -> ImageSource:
    """An :class:`ImageSource` from anything this module accepts (see its docstring)."""
    import datasets

    name = None
    path_root = None
    if isinstance(dataset, (str, Path)):
        path = Path(dataset).expanduser()
        if path.exists():
            dataset, name, path_root = _load_path(path, streaming)
        else:
            name = str(dataset)
            dataset, revision = _load_hub(name, revision, streaming)
    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        dataset, split = _pick_split(dataset, split)
    if not isinstance(dataset, (datasets.Dataset, datasets.IterableDataset)):
        raise TypeError(
            f"expected a datasets.Dataset, IterableDataset, DatasetDict, an image folder, a save_to_disk folder, "
            f"a Parquet/CSV/JSON-lines file or a Hub dataset id, got {type(dataset).__name__}"
        )
    if isinstance(dataset, datasets.Dataset):
        if len(dataset) == 0:
            raise EmptyDatasetError(_no_rows(name or (dataset.info.dataset_name if dataset.info else None), "dataset",
                                             split))
        name = name or (dataset.info.dataset_name if dataset.info else None)
        split = split or (str(dataset.split) if dataset.split is not None else None)
    elif _stream_is_empty(dataset):
        raise EmptyDatasetError(_no_rows(name or (dataset.info.dataset_name if dataset.info else None), "stream",
                                         split))
    columns = list(dataset.column_names or [])
    column = _find_image_column(dataset.features, columns, image_column)
    if key_column is not None and columns and key_column not in columns:
        raise ValueError(f"key_column {key_column!r} is not a column of the dataset; columns: {columns}")
    if label_column is not None and columns and label_column not in columns:
        raise ValueError(f"label_column {label_column!r} is not a column of the dataset; columns: {columns}")
    if label_column is None and "label" in columns:
        label_column = "label"
    features = dataset.features
    if features is not None and isinstance(features.get(column), datasets.Image):
        dataset = dataset.cast_column(column, datasets.Image(decode=False))
    return ImageSource(dataset=dataset, image_column=column, key_column=key_column, label_column=label_column,
                       name=name, split=split, revision=revision, path_root=path_root)


def _stream_is_empty(stream: datasets.IterableDataset) -> bool:
    """Whether a stream ends before its first example, read without decoding any image (one may be unreadable)."""
    import datasets

    features = stream.features
    if features is not None:
        for name, feature in features.items():
            if isinstance(feature, datasets.Image):
                stream = stream.cast_column(name, datasets.Image(decode=False))
    return next(iter(stream.take(1)), None) is None


def _no_rows(name: str | None, kind: str, split: str | None = None) -> str:
    """The one line that says which input is empty and what to do."""
    which = f"the {kind} {name!r}" if name else f"the {kind} passed"
    where = f" (split {split!r})" if split else ""
    return (f"{which}{where} holds no images (0 rows): EPIC fits and evaluates on images; pass a dataset, folder or "
            "file that has some")


def _saved_split_is_empty(folder: Path) -> bool:
    """Whether a ``save_to_disk`` folder holds a split saved with no data file (a Dataset of 0 rows)."""
    import json

    for state in [folder / "state.json", *folder.glob("*/state.json")]:
        try:
            if state.is_file() and not json.loads(state.read_text()).get("_data_files"):
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False
