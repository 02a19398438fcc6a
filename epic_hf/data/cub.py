"""CUB-200-2011 as it ships: its text files read into a ``datasets.DatasetDict`` with parts and boxes.

Why a reader of its own: the unpacked ``CUB_200_2011`` folder is not an image folder in
``datasets``' sense (its labels, split, boxes and part keypoints are in text files beside
``images/``), and ``imagefolder`` on it fails with ``Instruction "train" corresponds to no data``.

The splits ``train`` and ``test`` come from ``train_test_split.txt`` (1 = train). Each row has
``image`` (the file, read undecoded like any image column), ``label`` (a ``ClassLabel`` whose
names are ``classes.txt``'s, in class-id order), ``image_id`` (CUB's own id; pass
``key_column="image_id"`` to key samples by it, else keys are row indices as for any Dataset),
``bbox`` (``[x, y, width, height]`` in original pixels, as ``bounding_boxes.txt`` has it) and
``parts`` (``{part name: [x, y, visible]}`` in original pixels, from ``parts/part_locs.txt``), the
columns :mod:`epic_hf.evaluation.parts` scores prototypes against.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datasets

#: The files CUB-200-2011 ships, relative to its folder; every one is needed.
CUB_FILES = ("images.txt", "image_class_labels.txt", "classes.txt", "train_test_split.txt", "bounding_boxes.txt",
             "parts/parts.txt", "parts/part_locs.txt")
#: What marks a folder as CUB-200-2011 (then a missing file is an error that names it).
CUB_MARKERS = ("images.txt", "train_test_split.txt", "parts/part_locs.txt")


def cub_root(folder: Path) -> Path | None:
    """The CUB-200-2011 folder at ``folder`` (or its one ``CUB_200_2011`` subfolder, as the tarball unpacks), else None."""
    for candidate in (folder, folder / "CUB_200_2011"):
        if any((candidate / marker).is_file() for marker in CUB_MARKERS):
            return candidate
    return None


def _rows(root: Path, name: str, fields: int) -> list[list[str]]:
    """The whitespace-separated rows of one CUB file (the last field keeps its spaces: part and class names)."""
    path = root / name
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = line.split(None, fields - 1)
        if len(row) != fields:
            raise ValueError(f"{path}, line {number}: expected {fields} fields, got {line.strip()!r}")
        rows.append(row)
    return rows


def load_cub(folder: Path) -> datasets.DatasetDict:
    """The ``train`` and ``test`` splits of the CUB-200-2011 folder ``folder`` (see the module docstring)."""
    import datasets

    missing = [name for name in CUB_FILES if not (folder / name).is_file()]
    if not (folder / "images").is_dir():
        missing.append("images/")
    if missing:
        raise FileNotFoundError(
            f"{str(folder)!r} looks like CUB-200-2011 but lacks {', '.join(missing)}: unpack CUB_200_2011.tgz whole "
            "and pass its CUB_200_2011 folder")
    classes = sorted((int(i), name.strip()) for i, name in _rows(folder, "classes.txt", 2))
    class_index = {class_id: position for position, (class_id, _) in enumerate(classes)}
    parts = sorted((int(i), name.strip()) for i, name in _rows(folder, "parts/parts.txt", 2))
    part_names = [name for _, name in parts]
    labels = {int(i): class_index[int(c)] for i, c in _rows(folder, "image_class_labels.txt", 2) if int(c) in class_index}
    is_train = {int(i): flag.strip() == "1" for i, flag in _rows(folder, "train_test_split.txt", 2)}
    boxes = {int(row[0]): [float(v) for v in row[1:]] for row in _rows(folder, "bounding_boxes.txt", 5)}
    points: dict[int, dict[str, list[float]]] = {}
    part_name = dict(parts)
    for image, part, x, y, visible in _rows(folder, "parts/part_locs.txt", 5):
        points.setdefault(int(image), {})[part_name[int(part)]] = [float(x), float(y), float(visible)]
    features = datasets.Features({
        "image": datasets.Image(decode=False), "label": datasets.ClassLabel(names=[name for _, name in classes]),
        "image_id": datasets.Value("int64"), "bbox": datasets.Sequence(datasets.Value("float32"), length=4),
        "parts": {name: datasets.Sequence(datasets.Value("float32"), length=3) for name in part_names}})
    splits: dict[str, dict[str, list]] = {"train": {}, "test": {}}
    images = sorted((int(i), p.strip()) for i, p in _rows(folder, "images.txt", 2))
    unlabelled = [image_id for image_id, _ in images if image_id not in labels]
    if unlabelled:
        raise ValueError(f"{folder / 'image_class_labels.txt'} gives no class to {len(unlabelled)} images of images.txt "
                         f"(e.g. image id {unlabelled[0]}): the files do not belong together")
    for image_id, path in images:
        columns = splits["train" if is_train.get(image_id, False) else "test"]
        unknown = [0.0, 0.0, 0.0]
        for column, value in (("image", {"path": str(folder / "images" / path), "bytes": None}),
                              ("label", labels[image_id]), ("image_id", image_id),
                              ("bbox", boxes.get(image_id, [0.0, 0.0, 0.0, 0.0])),
                              ("parts", {name: points.get(image_id, {}).get(name, unknown) for name in part_names})):
            columns.setdefault(column, []).append(value)
    return datasets.DatasetDict({split: datasets.Dataset.from_dict(columns or {k: [] for k in features},
                                                                   features=features, split=split)
                                 for split, columns in splits.items()})
