"""The evaluation's pictures: accuracy along beta, class probabilities along beta (DXAI paper,
fig. 7), rate-distortion curves (CartoonX paper, fig. 7) and the grid of decompositions.

The plots read the ``evaluation`` section of metrics.json as ``dxai.evaluation.stage`` builds
it; the grid and the x_beta examples take a few explanations of the first validation images.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from dxai.explanation import Explanation  # noqa: E402
from dxai.normalization import Normalization  # noqa: E402
from dxai.panels import to_pil  # noqa: E402

METHOD_NAMES = {"dxai": "DXAI", "random": "Random", "grad_cam": "Grad-CAM", "guided_grad_cam": "Guided Grad-CAM",
                "integrated_gradients": "Integrated Gradients", "gradient_shap": "Gradient SHAP", "lrp": "LRP",
                "internal_influence": "Internal Influence", "reference_truth": "the true class part (reference)",
                "reference_zero": "the zero part (reference)", "reference_image": "the image itself (reference)"}
RD_NAMES = {"cartoonx": "CartoonX", "predictor": "mask predictor (one pass)", "random_wavelet": "random (wavelet)",
            "pixel_rde": "Pixel RDE", "random_pixel": "random (pixel)"}
RD_STYLES = {"cartoonx": ("tab:blue", "-"), "predictor": ("tab:orange", "-"), "random_wavelet": ("tab:blue", ":"),
             "pixel_rde": ("tab:green", "-"), "random_pixel": ("tab:green", ":")}
FIGURE_BETAS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
BETA_PLOT, PROBABILITY_PLOT, GRID, RD_PLOT = "beta_accuracy.png", "class_probabilities.png", \
    "decompositions.png", "rate_distortion.png"
TILE, GAP, HEADER, ROW_LABEL = 80, 4, 30, 110


def method_name(name: str) -> str:
    return METHOD_NAMES.get(name, name)


def _save(figure, path: Path, rect=(0, 0, 1, 1)) -> Path:
    """Lay out the axes inside ``rect`` (figure fractions; the rest is left to legends) and save."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout(rect=rect)
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_beta_accuracy(section: dict, path: Path) -> Path:
    """Accuracy of x_beta against beta, one line per method, beta-AUC in the legend."""
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, accuracy in section["beta_accuracy"].items():
        dxai = name == "dxai"
        axes.plot(section["betas"], accuracy, marker="o", markersize=3, linewidth=2.5 if dxai else 1.2,
                  color="black" if dxai else None, linestyle="--" if name == "random" else "-",
                  label=f"{method_name(name)} (AUC {section['beta_auc'][name]:.3f})")
    axes.axhline(1 / len(section["classes"]), color="grey", linewidth=0.8, linestyle=":", label="chance")
    axes.set_xlabel(r"$\beta$   ($x_\beta = x - \beta\,\psi_{distinct}$)")
    axes.set_ylabel("classifier accuracy")
    axes.set_ylim(0, 1.02)
    axes.set_title(f"Removing the distinct part, {section['num_images']} validation images (lower is better)",
                   fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7.5, loc="lower left")
    return _save(figure, path)


def _x_beta_images(example: Explanation, normalization: Normalization) -> list[torch.Tensor]:
    return [normalization.denormalize(example.images[0] - beta * example.distinct[0]).clamp(0, 1)
            for beta in FIGURE_BETAS]


def plot_class_probabilities(section: dict, examples: dict[int, Explanation], normalization: Normalization,
                             path: Path, method: str = "dxai") -> Path:
    """The DXAI paper's fig. 7: per true class, the mean softmax vector at several beta, and
    x_beta of one example image of that class."""
    classes = section["classes"]
    probabilities = torch.tensor(section["class_probabilities"][method])   # (c, betas, c)
    shown = [section["betas"].index(beta) for beta in FIGURE_BETAS]
    width = 0.8 / len(classes)
    figure, axes = plt.subplots(len(classes), 2, figsize=(10, 2.3 * len(classes)), dpi=110,
                                gridspec_kw={"width_ratios": [1.2, 1]}, squeeze=False)
    for label, name in enumerate(classes):
        bars = axes[label, 0]
        for index, other in enumerate(classes):
            bars.bar([position + index * width for position in range(len(shown))],
                     probabilities[label, shown, index].tolist(), width, label=other)
        bars.axhline(1 / len(classes), color="grey", linewidth=0.8, linestyle=":")
        bars.set_xticks([position + width * (len(classes) - 1) / 2 for position in range(len(shown))],
                        [f"β={beta:g}" for beta in FIGURE_BETAS], fontsize=8)
        bars.set_ylim(0, 1)
        bars.set_ylabel(f"true: {name}", fontsize=9)
        strip = axes[label, 1]
        strip.axis("off")
        if label in examples:
            images = _x_beta_images(examples[label], normalization)
            strip.imshow(torch.cat(images, dim=2).permute(1, 2, 0).cpu().numpy().squeeze(), cmap="gray",
                         interpolation="nearest")
            strip.set_title(" | ".join(f"β={beta:g}" for beta in FIGURE_BETAS), fontsize=7)
    handles, names = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 0.955), ncol=len(classes), fontsize=8,
                  title="mean probability of", title_fontsize=8)
    figure.suptitle(f"{method_name(method)}: mean class probabilities of x_β per true class (fig. 7)", fontsize=10)
    return _save(figure, path, rect=(0, 0, 1, 1 - 0.24 / len(classes)))


def plot_rate_distortion(rd: dict, path: Path) -> Path:
    """The CartoonX paper's fig. 7a (keep the most relevant) and 7b (randomise the most relevant)."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    titles = {"keep": "keep the most relevant, randomise the rest\n(best: lowest, falls fastest)",
              "randomize": "randomise the most relevant, keep the rest\n(best: highest, rises fastest)"}
    for axis, (mode, curves) in zip(axes, rd["curves"].items()):
        for name, values in curves.items():
            colour, style = RD_STYLES[name]
            axis.plot(rd["fractions"], values, color=colour, linestyle=style, label=RD_NAMES[name])
        axis.set_xlabel("fraction of kept coefficients" if mode == "keep" else "fraction of randomised coefficients")
        axis.set_ylabel(r"distortion $\|p(x) - p(y)\|_2^2$")
        axis.set_title(titles[mode], fontsize=9)
        axis.grid(alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    figure.legend(handles, names, loc="lower center", ncol=len(names), fontsize=8)
    settings = rd["settings"]
    figure.suptitle(f"Rate-distortion, {settings['images']} images; CartoonX / Pixel RDE: {settings['steps']} steps, "
                    f"lr {settings['lr']:g}, L = {settings['num_samples']}", fontsize=10)
    return _save(figure, path, rect=(0, 0.07, 1, 1))


def _part_tile(part: torch.Tensor, normalization: Normalization) -> torch.Tensor:
    """A signed additive part in [0, 1] image units around mid-grey (grey = 0)."""
    return (0.5 + normalization.unscale(part)).clamp(0, 1)


def decomposition_grid(explanations: dict[str, Explanation], normalization: Normalization, class_names: list[str],
                       path: Path, labels: torch.Tensor, class_parts: torch.Tensor | None = None,
                       agnostic_predictions: list[list[str]] | None = None) -> Path:
    """Rows: images. Columns: the input, the true class part (synthetic data), DXAI's distinct
    part, agnostic part and cartoon, then every baseline's distinct part. ``agnostic_predictions``:
    per row, lines naming what classifiers read in DXAI's agnostic part (written under the labels)."""
    dxai = explanations.get("dxai")
    columns: list[tuple[str, list[torch.Tensor]]] = []
    reference = next(iter(explanations.values()))
    columns.append(("input", [normalization.denormalize(image) for image in reference.images]))
    if class_parts is not None:
        columns.append(("true class part", [_part_tile(part, normalization) for part in class_parts]))
    if dxai is not None:
        columns.append(("DXAI distinct", [_part_tile(part, normalization) for part in dxai.distinct]))
        columns.append(("DXAI agnostic", [normalization.denormalize(part).clamp(0, 1) for part in dxai.agnostic]))
        if dxai.cartoon is not None:
            columns.append(("DXAI cartoon", list(dxai.cartoon)))
    for name, explanation in explanations.items():
        if name != "dxai":
            columns.append((method_name(name), [_part_tile(part, normalization) for part in explanation.distinct]))
    rows = len(reference.images)
    font = ImageFont.load_default()
    step = TILE + GAP
    canvas = Image.new("RGB", (ROW_LABEL + step * len(columns), HEADER + step * rows), "white")
    draw = ImageDraw.Draw(canvas)
    for column, (title, tiles) in enumerate(columns):
        left = ROW_LABEL + column * step
        for line, text in enumerate(_wrap(title, 13)):
            draw.text((left + 2, 2 + 12 * line), text, fill="black", font=font)
        for row, tile in enumerate(tiles):
            canvas.paste(to_pil(tile).resize((TILE, TILE), Image.Resampling.NEAREST), (left, HEADER + row * step))
    for row in range(rows):
        predicted = int(reference.predicted[row])
        text = [f"true: {class_names[int(labels[row])]}", f"predicted: {class_names[predicted]}"]
        if agnostic_predictions is not None:
            text += ["on agnostic:", *agnostic_predictions[row]]
        for line, value in enumerate(text):
            draw.text((4, HEADER + row * step + 4 + 12 * line), value, fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def _wrap(text: str, width: int) -> list[str]:
    words, lines = text.split(), [""]
    for word in words:
        if lines[-1] and len(lines[-1]) + 1 + len(word) > width:
            lines.append(word)
        else:
            lines[-1] = f"{lines[-1]} {word}".strip()
    return lines
