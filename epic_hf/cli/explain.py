"""``epic-hf explain``: explain every readable image, name each unreadable one, write pictures/HTML/JSON."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..atomic import write_atomic
from ..bank import PrototypeBank
from ..errors import UnreadableImageError
from ..explainer import EpicExplainer
from ..images import to_rgb
from ..naming import closest_labels, match_label
from ..viz import MAX_CHANNELS_SHOWN, write_html_report
from ..viz.fonts import printable
from .common import PICTURE_SUFFIXES, CliError, emit, image_paths, model_reference, parse_target

logger = logging.getLogger("epic_hf.cli")


def add_parser(commands, common: argparse.ArgumentParser, formatter) -> None:
    explain = commands.add_parser(
        "explain", parents=[common], formatter_class=formatter,
        help="explain a classifier's predictions on images",
        description="Decompose each image's logit exactly into disentangled channels and show their "
                    "prototypes. MODEL is an EPIC bank (directory, fit output dir or Hub repo; it loads its "
                    "base model) or a plain classifier (then pass --bank, or get contributions only). "
                    "Unreadable images are named in a warning and skipped (--strict makes them fatal).",
    )
    explain.add_argument("model", help="EPIC bank dir / Hub repo, a fit's output dir, or a classifier")
    explain.add_argument("images", nargs="+", help="image files, or folders of images (class subfolders give "
                                                   "the true label)")
    explain.add_argument("--bank", default=None, help="an EPIC bank for MODEL (directory or Hub repo)")
    explain.add_argument("--base-model", default=None,
                         help="where the bank's classifier is now, when it has moved (folder or Hub id)")
    explain.add_argument("--revision", default=None, help="revision of MODEL")
    explain.add_argument("--trust-remote-code", action="store_true",
                         help="let a classifier whose repo ships its own Python code run it (only for authors you "
                              "trust; never stored in a bank)")
    explain.add_argument("--bank-revision", default=None, help="revision of --bank")
    explain.add_argument("--top-k", type=int, default=4,
                         help=f"channels shown per image, at most {MAX_CHANNELS_SHOWN} (default: 4)")
    explain.add_argument("--target", default=None,
                         help="class index or label to explain (by default the predicted class)")
    explain.add_argument("--true-label", default=None, help="the true class of every image, to mark misses")
    explain.add_argument("--batch-size", type=int, default=32, help="images per batch (default: 32)")
    explain.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    explain.add_argument("--overlay", choices=("shown", "all"), default=None,
                         help="draw the input under the pixel map of the shown channels (or of all channels: the "
                              "class activation map), the map the deletion and insertion metrics score")
    explain.add_argument("--output", "-o", default=None,
                         help="a .png/.jpg (one per image: NAME_i.png), .html report, .json file, or a directory "
                              "(pictures + report.html + explanations.json)")
    explain.set_defaults(handler=run)


def check_output(output: Path) -> None:
    """Refuse an output the command cannot write, before any model loads."""
    suffix = output.suffix.lower()
    if suffix and suffix not in (".html", ".json", *PICTURE_SUFFIXES) and not output.is_dir():
        raise CliError(f"--output {str(output)!r}: use a .png/.jpg picture, a .html report, a .json file or a "
                       "directory")


def write_outputs(explanations: list, paths: list[Path], output: Path, skipped: list[str],
                  overlay: str | None = None) -> list[Path]:
    check_output(output)
    suffix = output.suffix.lower()
    if suffix == ".html":
        output.parent.mkdir(parents=True, exist_ok=True)
        write_html_report(explanations, output, skipped=skipped)
        return [output]
    if suffix == ".json":
        output.parent.mkdir(parents=True, exist_ok=True)
        records = [{"image": str(path), **e.to_dict()} for path, e in zip(paths, explanations)]
        write_atomic(output, json.dumps(records, indent=2))
        return [output]
    if suffix in PICTURE_SUFFIXES:
        if len(explanations) == 1:
            return [explanations[0].save(output, overlay)]
        return [e.save(output.with_name(f"{output.stem}_{i}{output.suffix}"), overlay)
                for i, e in enumerate(explanations)]
    output.mkdir(parents=True, exist_ok=True)  # a directory: a picture and a JSON per image, a report, all JSON
    written: list[Path] = []
    pictures, documents = [], []
    for name, explanation in zip(output_names(paths), explanations):
        pictures.append(explanation.save(output / f"{name}.png", overlay))
        documents.append(explanation.save(output / f"{name}.json"))
    written += pictures + documents
    write_html_report(explanations, output / "report.html", skipped=skipped, png_paths=pictures,
                      json_paths=documents)
    written.append(output / "report.html")
    written.extend(write_outputs(explanations, paths, output / "explanations.json", skipped))
    return written


#: Names the directory output uses for itself (report.html, explanations.json): no image may take them.
RESERVED_NAMES = ("report", "explanations")


def output_names(paths: list[Path]) -> list[str]:
    """One distinct, safe file stem per image, decided before anything is written.

    The stem is the image's own (``cat.jpg`` -> ``cat``), made a plain name: control characters,
    separators and leading dots become ``_`` (``..jpg`` -> ``_``). Repeats, and stems that
    collide with another image's or with :data:`RESERVED_NAMES` (ignoring case, as some file
    systems do), get the first free ``_1``, ``_2``... suffix: ``cat.jpg``, ``cat.png`` and
    ``cat_1.jpg`` give ``cat``, ``cat_2`` and ``cat_1``.
    """
    stems = [_safe_stem(path) for path in paths]
    taken = {name.lower() for name in RESERVED_NAMES}
    names: list[str | None] = [None] * len(stems)
    first_seen: dict[str, int] = {}
    for position, stem in enumerate(stems):  # each stem's first image keeps it, when it is free
        if stem.lower() not in taken and stem.lower() not in first_seen:
            first_seen[stem.lower()] = position
    for stem, position in first_seen.items():
        names[position] = stems[position]
        taken.add(stem)
    for position, stem in enumerate(stems):
        if names[position] is None:
            suffix = 1
            while f"{stem}_{suffix}".lower() in taken:
                suffix += 1
            names[position] = f"{stem}_{suffix}"
            taken.add(f"{stem}_{suffix}".lower())
    return [name for name in names if name is not None]


def _safe_stem(path: Path) -> str:
    stem = "".join(char if char.isprintable() and char not in '/\\:*?"<>|' else "_" for char in path.stem)
    stem = stem.strip()
    if stem.startswith("."):
        stem = "_" + stem.lstrip(".")
    return stem or "image"


def _readable(paths: list[Path], strict: bool) -> tuple[list[Path], list, list[str]]:
    """(paths, decoded images, skipped descriptions): unreadable images are named and skipped."""
    kept, images, skipped = [], [], []
    for position, path in enumerate(paths):
        try:
            images.append(to_rgb(path, position))
            kept.append(path)
        except UnreadableImageError as error:
            if strict:
                raise
            logger.warning("skipping %s: %s", path, error.reason)
            skipped.append(f"{path}: {error.reason}")
    return kept, images, skipped


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.top_k <= MAX_CHANNELS_SHOWN:
        raise CliError(f"--top-k must be between 1 and {MAX_CHANNELS_SHOWN} for the pictures, got {args.top_k} "
                       "(explanation.contributions in the JSON holds every channel)")
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.output is not None:
        check_output(Path(args.output).expanduser())
    paths, images, skipped = _readable(image_paths(args.images), args.strict)
    if not paths:
        raise CliError(f"none of the {len(skipped)} images could be read")
    explainer = EpicExplainer.from_pretrained(model_reference(args.model), revision=args.revision,
                                              base_model=args.base_model, trust_remote_code=args.trust_remote_code)
    if args.bank is not None:
        explainer.set_bank(PrototypeBank.from_pretrained(model_reference(args.bank), revision=args.bank_revision))
    if explainer.bank is None:
        logger.warning("%s has no EPIC bank: showing channel contributions without prototypes "
                       "(fit one with `epic-hf fit`, or pass --bank)", args.model)
    truths = true_labels(paths, args.images, args.true_label, list(explainer.id2label.values()))
    explanations = explainer.explain(images, target=parse_target(args.target), top_k=args.top_k,
                                     batch_size=args.batch_size, true_label=truths)
    for path, explanation in zip(paths, explanations):
        explanation.source = path.name
        channels = ", ".join(f"#{c.channel} {c.contribution:+.3f}" for c in explanation.channels)
        emit(f"{printable(str(path))}: {printable(explanation.target_label)} (class {explanation.target_index}, "
             f"p={explanation.probability:.3f}, logit {explanation.target_logit:.3f}); top channels: {channels}")
    if args.output is not None:
        for written in write_outputs(explanations, paths, Path(args.output).expanduser(), skipped, args.overlay):
            emit(f"wrote {printable(str(written))}")
    return 0


def true_labels(paths: list[Path], roots: list[str], given: str | None, labels: list[str]) -> list[str | None]:
    """Each image's true label, as one of the model's ``labels``: ``--true-label``, else its class subfolder.

    A name is read as the label it matches ignoring case, spaces, underscores and hyphens
    (:func:`~epic_hf.naming.match_label`: folder ``red_circle`` is label ``red circle``). A name
    that matches no label marks no hit or miss: calling its images misses would blame the model
    for a folder's spelling. One warning names each such name with the closest labels.
    """
    names = [given if given is not None else _folder_label(path, roots) for path in paths]
    matched = {name: match_label(name, labels) for name in set(names) if name is not None}
    unmatched = sorted(name for name, label in matched.items() if label is None)
    if unmatched:
        counts = {name: names.count(name) for name in unmatched}
        described = "; ".join(_unmatched(name, counts[name], labels, given is not None) for name in unmatched)
        logger.warning("%s: no hit or miss is marked for %s (name a folder after one of the model's labels; case, "
                       "spaces, _ and - do not matter)", described,
                       "these images" if sum(counts.values()) > 1 else "this image")
    return [matched[name] if name is not None else None for name in names]


def _unmatched(name: str, count: int, labels: list[str], flag: bool) -> str:
    close = closest_labels(name, labels)
    images = f"{count} image{'' if count == 1 else 's'}"
    where = f"--true-label {printable(name)!r}" if flag else f"class folder {printable(name)!r} ({images})"
    hint = f"closest: {', '.join(repr(printable(label)) for label in close)}" if close else "no label is close"
    return f"{where} matches none of the model's {len(labels)} labels ({hint})"


def _folder_label(path: Path, roots: list[str]) -> str | None:
    """The class subfolder an image sits in under a folder given on the command line (ImageFolder layout)."""
    for root in roots:
        base = Path(root).expanduser()
        if base.is_dir():
            try:
                parts = path.relative_to(base).parts
            except ValueError:
                continue
            if len(parts) == 2:
                return parts[0]
    return None
