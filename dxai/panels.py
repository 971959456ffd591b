"""Pictures of explanations: one labelled panel per image (input | distinct | agnostic | cartoon).

Signed parts (the distinct part, single branches) are stretched per image to [0, 1] so that
their structure shows whatever their scale; the agnostic part is shown as the image it is.
"""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw, ImageFont

from dxai.explanation import Explanation
from dxai.normalization import Normalization

TILE = 160
LABEL_HEIGHT = 18
GRID_MIN_TILE = 96


def stretch(part: torch.Tensor) -> torch.Tensor:
    """Map a signed C x H x W part to [0, 1] by its own min and max (zero stays mid-grey when symmetric)."""
    low, high = part.min(), part.max()
    return (part - low) / (high - low).clamp_min(1e-8)


def to_pil(image01: torch.Tensor) -> Image.Image:
    array = (image01.detach().float().cpu().clamp(0, 1) * 255).round().byte()
    if array.shape[0] == 1:
        return Image.fromarray(array[0].numpy(), mode="L").convert("RGB")
    return Image.fromarray(array.permute(1, 2, 0).numpy(), mode="RGB")


def explanation_tiles(explanation: Explanation, index: int, normalization: Normalization,
                      with_branches: bool = False) -> list[tuple[str, torch.Tensor]]:
    """(title, [0, 1] image) pairs for image ``index`` of a batch explanation."""
    tiles = [("input", normalization.denormalize(explanation.images[index]))]
    if explanation.distinct is not None:
        tiles.append(("distinct", stretch(explanation.distinct[index])))
    if explanation.agnostic is not None:
        tiles.append(("agnostic", normalization.denormalize(explanation.agnostic[index])))
    if explanation.cartoon is not None:
        tiles.append(("cartoon", explanation.cartoon[index]))
    if with_branches and explanation.branches is not None:
        tiles += [(f"branch {k + 1}", stretch(branch)) for k, branch in enumerate(explanation.branches[index])]
    return tiles


def panel(tiles: list[tuple[str, torch.Tensor]], caption: str, tile: int = TILE) -> Image.Image:
    """Tiles side by side, each titled, under a caption line."""
    font = ImageFont.load_default()
    width = tile * len(tiles)
    canvas = Image.new("RGB", (width, tile + 2 * LABEL_HEIGHT), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), caption, fill="black", font=font)
    for column, (title, image) in enumerate(tiles):
        picture = to_pil(image).resize((tile, tile), Image.Resampling.NEAREST)
        canvas.paste(picture, (column * tile, 2 * LABEL_HEIGHT))
        draw.text((column * tile + 4, LABEL_HEIGHT + 2), title, fill="black", font=font)
    return canvas


def titled_grid(images: torch.Tensor, columns: list[str]) -> Image.Image:
    """(rows x columns) [0, 1] images as a grid under a row of column titles.

    Tiles smaller than ``GRID_MIN_TILE`` pixels are enlarged by an integer factor (nearest
    neighbour, so pixels stay pixels): a 32 px training panel is readable at a glance.
    """
    height, width = images.shape[-2:]
    scale = max(1, -(-GRID_MIN_TILE // max(height, width)))
    tile_w, tile_h, gap = width * scale, height * scale, 2
    rows = -(-len(images) // len(columns))
    canvas = Image.new("RGB", (len(columns) * (tile_w + gap), LABEL_HEIGHT + rows * (tile_h + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for column, title in enumerate(columns):
        draw.text((column * (tile_w + gap) + 2, 3), title, fill="black", font=font)
    for index, image in enumerate(images):
        row, column = divmod(index, len(columns))
        picture = to_pil(image).resize((tile_w, tile_h), Image.Resampling.NEAREST)
        canvas.paste(picture, (column * (tile_w + gap), LABEL_HEIGHT + row * (tile_h + gap)))
    return canvas


def explanation_panel(explanation: Explanation, index: int, class_names: list[str], normalization: Normalization,
                      with_branches: bool = False, title: str = "") -> Image.Image:
    """The panel of one image, captioned with the predicted class and its probability."""
    caption = title
    if explanation.predicted is not None and explanation.probabilities is not None:
        predicted = int(explanation.predicted[index])
        probability = float(explanation.probabilities[index, predicted])
        caption = f"{title}  predicted: {class_names[predicted]} ({probability:.2f})".strip()
        target = int(explanation.target[index])
        if target != predicted:
            caption += f"  explained: {class_names[target]}"
    return panel(explanation_tiles(explanation, index, normalization, with_branches), caption)
