"""Pictures as model input: decoded, resized to the model's image input, normalised as it expects.

Only for a model whose one input is an image: rank 3 (without the batch dimension) with a channel
dimension of 1 or 3 first (CHW, the ONNX/Triton convention, chosen when both ends could be) or
last (HWC). Height and width come from the model's shape (--shape sizes dynamic ones).

How a picture is normalised is the model's to say, in its config.pbtxt parameter
`loadtest.image.<input>` = a preset name (the suite's image models set it); without one, a float
input gets `unit` and an integer input `raw`. The presets follow MLPerf's reference preprocessing
(mlcommons/inference vision/classification_and_detection/python/dataset.py; docs/input_data.md):

- mlperf-resnet50: shorter side to H/0.875 keeping the aspect ratio, centre crop HxW;
  RGB 0..255 minus the mean (123.68, 116.78, 103.94);
- mlperf-ssd-mobilenet: stretch to HxW; (x - 127.5) / 127.5, in [-1, 1];
- mlperf-retinanet, unit: stretch to HxW; x / 255, in [0, 1];
- raw: stretch to HxW; x, 0..255.

Resampling is Pillow's bilinear (antialiased when shrinking), not OpenCV's INTER_AREA/LINEAR as in
MLPerf's scripts: pixel values differ slightly; what a load test needs (real content, the right
shape, dtype and value range) is the same. Pillow is imported only when pictures are given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from loadtest.core.target import ModelSpec, TensorSpec
from loadtest.engine.inputs.checks import UserTensors, data_error

if TYPE_CHECKING:
    from PIL.Image import Image as Picture

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
IMAGE_PARAMETER_PREFIX = "loadtest.image."
MLPERF_CROP = 0.875  # MLPerf's resize_with_aspectratio scale=87.5: the crop is 87.5% of the side


@dataclass(frozen=True)
class Preset:
    """resize: "crop" (MLPerf ResNet: shorter side to H/0.875, centre crop) or "stretch"."""

    resize: str
    mean: tuple[float, float, float]
    scale: float  # value = (pixel - mean) / scale

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """HWC uint8 -> float32 HWC (a 1-channel image uses the first mean)."""
        mean = np.asarray(self.mean[: pixels.shape[2]], dtype=np.float32)
        return (pixels.astype(np.float32) - mean) / np.float32(self.scale)


PRESETS: dict[str, Preset] = {
    "mlperf-resnet50": Preset("crop", (123.68, 116.78, 103.94), 1.0),
    "mlperf-ssd-mobilenet": Preset("stretch", (127.5, 127.5, 127.5), 127.5),
    "mlperf-retinanet": Preset("stretch", (0.0, 0.0, 0.0), 255.0),
    "unit": Preset("stretch", (0.0, 0.0, 0.0), 255.0),
    "raw": Preset("stretch", (0.0, 0.0, 0.0), 1.0),
}


@dataclass(frozen=True)
class ImageLayout:
    channels_first: bool
    channels: int
    height: int
    width: int


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def image_layout(spec: TensorSpec, shapes: Mapping[str, tuple[int, ...]]) -> ImageLayout | None:
    """CHW or HWC with 1 or 3 channels, or None when the input is not a picture."""
    shape = shapes.get(spec.name, spec.shape)
    if len(shape) != 3:
        return None
    first, last = shape[0] in (1, 3), shape[2] in (1, 3)
    if first:
        channels, height, width = shape
    elif last:
        height, width, channels = shape
    else:
        return None
    return ImageLayout(first, channels, height, width)


def preset_for(path: Path, model: ModelSpec, spec: TensorSpec) -> tuple[str, Preset]:
    key = IMAGE_PARAMETER_PREFIX + spec.name
    default = "unit" if spec.numpy_dtype.kind == "f" else "raw"
    name = model.parameters.get(key, default)
    if name not in PRESETS:
        raise data_error(
            path,
            f"model parameter {key}={name!r} names no image preset (known: {', '.join(PRESETS)})",
        )
    if spec.numpy_dtype.kind != "f" and name != "raw":
        raise data_error(
            path, f"preset {name} gives fractional values; input {spec.name} is {spec.datatype}"
        )
    return name, PRESETS[name]


def _image_input(
    path: Path, model: ModelSpec, shapes: Mapping[str, tuple[int, ...]]
) -> tuple[TensorSpec, ImageLayout]:
    layout = image_layout(model.inputs[0], shapes) if len(model.inputs) == 1 else None
    if layout is None:
        described = ", ".join(f"{t.name} {list(t.shape)}" for t in model.inputs)
        raise data_error(
            path,
            f"pictures need a model with one image input (CHW or HWC, 1 or 3 channels); model "
            f"{model.name} has {described}",
        )
    if min(layout.height, layout.width, layout.channels) < 1:
        spec = model.inputs[0]
        raise data_error(
            path,
            f"input {spec.name} has dynamic shape {list(spec.shape)}: give --shape "
            f"{spec.name}:D1,D2,D3 to size the pictures",
        )
    return model.inputs[0], layout


def _resized(image: Picture, preset: Preset, layout: ImageLayout) -> Picture:
    from PIL import Image

    height, width = layout.height, layout.width
    if preset.resize == "stretch":
        return image.resize((width, height), Image.Resampling.BILINEAR)
    short_h, short_w = int(height / MLPERF_CROP), int(width / MLPERF_CROP)
    if image.height > image.width:
        size = (short_w, int(short_h * image.height / image.width))
    else:
        size = (int(short_w * image.width / image.height), short_h)
    image = image.resize(size, Image.Resampling.BILINEAR)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return image.crop((left, top, left + width, top + height))


def _decode(file: Path, layout: ImageLayout) -> Picture:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            return image.convert("RGB" if layout.channels == 3 else "L")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError) as exc:
        raise data_error(file, f"cannot decode the picture: {exc}") from None


def read_images(
    path: Path, model: ModelSpec, files: Sequence[Path], shapes: Mapping[str, tuple[int, ...]]
) -> UserTensors:
    """One sample per picture, in file-name order."""
    spec, layout = _image_input(path, model, shapes)
    _, preset = preset_for(path, model, spec)
    tensors = []
    for file in files:
        resized = _resized(_decode(file, layout), preset, layout)
        pixels = np.asarray(resized, dtype=np.uint8)
        if pixels.ndim == 2:
            pixels = pixels[:, :, np.newaxis]
        values = preset.normalise(pixels)
        if layout.channels_first:
            values = values.transpose(2, 0, 1)
        tensors.append(np.ascontiguousarray(values.astype(spec.numpy_dtype)))
    return {spec.name: tensors}
