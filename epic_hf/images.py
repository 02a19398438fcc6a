"""Turning whatever a user hands us into RGB PIL images, and pixel values back into pictures.

Files and dataset records are decoded by ``datasets``' own ``Image`` feature, which honours EXIF
orientation, as ``datasets`` and transformers' ``load_image`` do: a phone photo stored sideways
is fitted and explained upright. A PIL image handed in is transposed by its EXIF tag too
(``ImageOps.exif_transpose``; a no-op for an image without one). Errors name the offending
input by its position, so a bad file in a list of hundreds is easy to find.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .aliases import ImageProcessor
from .errors import UnreadableImageError

ImageInput = Image.Image | np.ndarray | str | os.PathLike


def to_rgb(image: object, position: int = 0) -> Image.Image:
    """An RGB PIL image from a PIL image of any mode, an HWC uint8 array or a file path."""
    if isinstance(image, Image.Image):
        return pil_to_rgb(upright(image))
    if isinstance(image, np.ndarray):
        return array_to_rgb(image, position)
    if isinstance(image, (str, os.PathLike)):
        return open_image_file(Path(image), position)
    if isinstance(image, dict) and ("bytes" in image or "path" in image):
        return decode_image_record(image, position)
    raise UnreadableImageError(
        position, f"expected a PIL image, a numpy HxWx3 uint8 array or an image file path, got {type(image).__name__}"
    )


_DECODER = datasets.Image()


def upright(image: Image.Image) -> Image.Image:
    """The image as it is meant to be seen: rotated or mirrored by its EXIF orientation tag, if any."""
    try:
        orientation = image.getexif().get(Image.ExifTags.Base.Orientation)
    except (AttributeError, OSError, ValueError):  # images without EXIF support, or a broken EXIF block
        return image
    return ImageOps.exif_transpose(image) if orientation not in (None, 1) else image


def pil_to_rgb(image: Image.Image) -> Image.Image:
    """RGB from any PIL mode; transparency is composited on white, 16/32-bit depth rescaled."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16"):
            values = values / 257.0
        else:
            low, high = float(values.min()), float(values.max())
            values = (values - low) * (255.0 / (high - low)) if high > low else values * 0.0
        grey = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
        return grey.convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def array_to_rgb(array: np.ndarray, position: int = 0) -> Image.Image:
    if array.dtype != np.uint8:
        raise UnreadableImageError(
            position, f"numpy images must be uint8 (0-255), got dtype {array.dtype}; "
            "convert with (array * 255).round().astype('uint8') if it holds values in [0, 1]"
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return Image.fromarray(array, mode="L").convert("RGB")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return pil_to_rgb(Image.fromarray(np.ascontiguousarray(array)))
    raise UnreadableImageError(
        position, "numpy images must be HxWx3 (or HxW, HxWx1, HxWx4) uint8, got shape "
        f"{tuple(array.shape)}; channels-first arrays need array.transpose(1, 2, 0)"
    )


def open_image_file(path: Path, position: int = 0) -> Image.Image:
    if not path.exists():
        raise UnreadableImageError(position, f"image file {str(path)!r} does not exist")
    return decode_image_record({"path": str(path), "bytes": None}, position)


def decode_image_record(record: dict, position: int = 0) -> Image.Image:
    """Decode a ``datasets`` Image record ``{"bytes": ..., "path": ...}`` (decode=False), upright, as RGB."""
    if record.get("bytes") is None and record.get("path") is None:
        raise UnreadableImageError(position, "image record has neither bytes nor path")
    try:
        return pil_to_rgb(_DECODER.decode_example({"path": record.get("path"), "bytes": record.get("bytes")}))
    except Image.DecompressionBombError as error:  # one huge image is skipped like any unreadable one
        name = repr(str(record["path"])) if record.get("path") else "<bytes>"
        raise UnreadableImageError(position, f"{name} is too large to decode safely ({error})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        name = repr(str(record["path"])) if record.get("path") else "<bytes>"
        raise UnreadableImageError(position, f"{name} is not a readable image ({error})") from None


def pixel_values_to_image(pixel_values: torch.Tensor, image_processor: ImageProcessor) -> Image.Image:
    """Undo the processor's rescale and normalisation: (C, H, W) -> RGB PIL image."""
    values = pixel_values.detach().float().cpu()
    timm_config = getattr(image_processor, "data_config", None)  # timm's processor: ToTensor, then Normalize
    is_timm = isinstance(timm_config, dict) and "mean" in timm_config and "std" in timm_config
    if is_timm and isinstance(timm_config, dict):
        mean = torch.as_tensor(timm_config["mean"], dtype=torch.float32).reshape(-1, 1, 1)
        std = torch.as_tensor(timm_config["std"], dtype=torch.float32).reshape(-1, 1, 1)
        values = (values * std + mean) * 255
    elif getattr(image_processor, "do_normalize", False):
        mean = torch.as_tensor(image_processor.image_mean, dtype=torch.float32).reshape(-1, 1, 1)
        std = torch.as_tensor(image_processor.image_std, dtype=torch.float32).reshape(-1, 1, 1)
        values = values * std + mean
    if not is_timm and getattr(image_processor, "do_rescale", True):
        factor = float(getattr(image_processor, "rescale_factor", 1 / 255))
        values = values / factor
    if values.shape[0] == 1:
        values = values.expand(3, -1, -1)
    array = values[:3].clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def encode_jpeg(image: Image.Image, max_side: int, quality: int) -> bytes:
    """A JPEG thumbnail no larger than ``max_side`` on its long side."""
    thumb = image.copy()
    thumb.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode_jpeg(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        return opened.convert("RGB")


def is_single_image(image: object) -> bool:
    """One image (PIL, array, path, decoded-or-not record), as opposed to a sequence of them."""
    if isinstance(image, (Image.Image, np.ndarray, str, os.PathLike, dict)):
        return True
    return not hasattr(image, "__iter__")


def per_image(value: str | int | Sequence[str | int | None] | None, count: int, single: bool) -> Sequence[object]:
    """One true label per image: ``value`` repeated for a single image, or a list of ``count``."""
    if value is None:
        return [None] * count
    if single or isinstance(value, (str, int)):
        return [value] * count
    values = list(value)
    if len(values) != count:
        raise ValueError(f"true_label has {len(values)} entries for {count} images")
    return values



def resized_size(original: tuple[int, int], input_size: tuple[int, int],
                 image_processor: ImageProcessor) -> tuple[int, int]:
    """(height, width) the processor resizes an ``original`` (height, width) image to, before any centre crop.

    Why: a box at the model input names a region of the original image only through the processor's
    resize and crop. transformers' processors say it in ``size``: ``{"height", "width"}`` warps;
    ``{"shortest_edge"}`` keeps the aspect (ConvNeXt's first scales by ``1/crop_pct`` below 384 and warps
    to a square at 384 and above). Anything else (timm's transforms, unknown settings) is taken as a warp
    to the input size, which is what a processor without a crop does.
    """
    height, width = original
    size = _settings(getattr(image_processor, "size", None))
    if not getattr(image_processor, "do_resize", True):
        return height, width
    if "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    if "shortest_edge" not in size:
        return input_size
    edge = int(size["shortest_edge"])
    crop_pct = getattr(image_processor, "crop_pct", None)
    if crop_pct is not None and type(image_processor).__name__.startswith("ConvNext"):
        if edge >= 384:
            return edge, edge
        edge = int(edge / crop_pct)
    short, long = (height, width) if height <= width else (width, height)
    long_new = int(edge * long / short)
    if "longest_edge" in size and long_new > int(size["longest_edge"]):
        edge, long_new = int(int(size["longest_edge"]) * short / long), int(size["longest_edge"])
    return (edge, long_new) if height <= width else (long_new, edge)


def _settings(size: object) -> dict[str, int]:
    """A processor's ``size`` (a dict, or transformers' ``SizeDict`` with unset fields None) as the fields set."""
    names = ("height", "width", "shortest_edge", "longest_edge")
    found = size if isinstance(size, dict) else {name: getattr(size, name, None) for name in names}
    return {name: int(value) for name in names if (value := found.get(name)) is not None}


def box_in_original(box: tuple[int, int, int, int], original: tuple[int, int], input_size: tuple[int, int],
                    image_processor: ImageProcessor) -> tuple[float, float, float, float]:
    """A model-input box (x0, y0, x1, y1) in the ``original`` (height, width) image's pixels.

    Undoes the centre crop (the resized image's centre at the input's centre, as transformers'
    ``center_crop`` places it) and then the resize (:func:`resized_size`). Part keypoints are given
    in original pixels, so a prototype's box is compared with them here, not at the input.
    """
    resized_h, resized_w = resized_size(original, input_size, image_processor)
    top, left = (resized_h - input_size[0]) // 2, (resized_w - input_size[1]) // 2
    scale_y, scale_x = original[0] / resized_h, original[1] / resized_w
    x0, y0, x1, y1 = box
    return ((x0 + left) * scale_x, (y0 + top) * scale_y, (x1 + left) * scale_x, (y1 + top) * scale_y)
