"""The evaluation's words: report.md (tables, the plots embedded, one paragraph each) and the
same tables and pictures on wandb.

Everything here reads the ``evaluation`` section of metrics.json as ``dxai.evaluation.stage``
builds it; the paragraphs state what the numbers show, also when they go against DXAI.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from dxai.evaluation.plots import BETA_PLOT, GRID, PROBABILITY_PLOT, RD_NAMES, RD_PLOT, method_name
from dxai.io import atomic_write_text


def _number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _methods(values: dict) -> dict:
    """``values`` without the reference rows of the ground-truth scoreboard."""
    return {name: value for name, value in values.items() if not name.startswith("reference_")}


def _beta_section(section: dict) -> str:
    auc, accuracy = _methods(section["beta_auc"]), section["beta_accuracy"]
    neutral_auc, energy = section["neutral_auc"], section["distinct_energy"]
    order = sorted(auc, key=lambda name: (math.isnan(auc[name]), auc[name]))
    rows = [[f"**{method_name(name)}**" if name == "dxai" else method_name(name), _number(auc[name]),
             _number(neutral_auc[name]), _number(energy[name]), _number(accuracy[name][0]),
             _number(accuracy[name][-1]), _number(section["agnostic_max_prob"][name]),
             _number(section["seconds_per_image"][name] * 1000, 1)]
            for name in order]
    text = [_table(["method", "beta-AUC (lower is better)", "neutral-AUC (lower is better)",
                    "distinct energy", "accuracy at β=0", "accuracy at β=1",
                    "top probability on the agnostic part", "ms per image"], rows),
            "", f"![accuracy against beta]({BETA_PLOT})", "",
            "beta-AUC counts how often the classifier still picks the true class along x - β ψ_distinct: it "
            "rewards an agnostic part that the classifier reads as *another* class (the paper's overshoot) and "
            "punishes one that is neutral but whose argmax still leans to the true class. neutral-AUC is the area "
            "over β of KL(uniform || p(x_β)) / KL(uniform || p(x)): it is low when removing the distinct part "
            "makes the classifier neutral (definition 1), and stays high for an overshoot. Distinct energy is "
            "||ψ_distinct||² / ||x - mean(x)||², how much of the image a method changes (definition 1 asks for "
            "the closest neutral image): erasing the whole image is trivially neutral, at an energy near 1.", ""]
    if "dxai" in auc and len(auc) > 1:
        baselines = {name: value for name, value in auc.items() if name != "dxai"}
        best = min(baselines, key=baselines.get)
        lower = [method_name(name) for name, value in baselines.items() if value <= auc["dxai"]]
        verdict = ("below every baseline's" if not lower else
                   f"**not** below every baseline's: {', '.join(lower)} score the same or lower")
        random_text = f", random {_number(auc['random'])}" if "random" in auc and best != "random" else ""
        neutral = section["agnostic_max_prob"]
        others = [neutral[name] for name in baselines]
        text.append(
            f"Removing a good distinct part should destroy the class evidence: the accuracy of "
            f"x_β = x - β ψ_distinct should fall fast as β goes from 0 to 1. DXAI's beta-AUC is "
            f"{_number(auc['dxai'])}, {verdict} (best baseline {method_name(best)} {_number(baselines[best])}"
            f"{random_text}; the DXAI paper reports 0.754 for DXAI, 0.907 for the best baseline and 0.993 for "
            f"random on AFHQ). A heatmap's part is the image scaled pixel by pixel, w x, so its x_β = (1 - β w) x "
            f"only fades pixels toward mid-grey (0 in the classifier's domain); DXAI's distinct part can add and "
            f"remove any intensity. The random heatmap fades every pixel by its own random amount, which makes "
            f"x_β an image the classifier never saw: its accuracy drop measures the classifier's robustness to "
            f"noise more than the removal of class evidence.")
        text.append("")
        text.append(
            f"The agnostic column is the classifier's mean top softmax probability on ψ_agnostic itself "
            f"(definition 1 of the paper), where 1/c = {1 / len(section['classes']):.3f} would be perfectly "
            f"class-neutral: DXAI's agnostic part scores {_number(neutral['dxai'])}, the baselines' "
            f"{_number(min(others))} to {_number(max(others))}. DXAI's time per image is the whole Explainer "
            f"call (classifier, generator and mask predictor).")
    return "\n".join(text)


def _probability_section(section: dict) -> str:
    probabilities = torch.tensor(section["class_probabilities"]["dxai"])   # (c, betas, c)
    classes = section["classes"]
    at_one = probabilities[:, -1]
    true_at_one = at_one.diagonal()
    rows = [[name, _number(float(probabilities[label, 0, label])), _number(float(true_at_one[label])),
             classes[int(at_one[label].argmax())]] for label, name in enumerate(classes)]
    overshoot = [name for label, name in enumerate(classes) if int(at_one[label].argmax()) != label]
    text = (f"Per true class, the mean probability vector of x_β for DXAI's distinct part (the paper's fig. 7) and "
            f"x_β of one example per class. Ideally the true class's bar falls to 1/c = {1 / len(classes):.3f} "
            f"at β = 1, where x_β is the agnostic part. ")
    text += (f"At β = 1 the classifier prefers another class for {', '.join(overshoot)}: the overshoot toward "
             "alternative classes that the paper also observes (the alpha-blending pushes the agnostic part "
             "toward the other classes)." if overshoot else
             "At β = 1 the classifier still prefers the true class for every class: the agnostic part keeps "
             "class evidence that the distinct part should have taken.")
    return "\n".join([f"![class probabilities along beta]({PROBABILITY_PLOT})", "",
                      _table(["true class", "p(true) at β=0", "p(true) at β=1", "top class at β=1"], rows), "",
                      text])


def _ground_truth_section(section: dict) -> str:
    error, corr, psnr = section["gt_distinct_error"], section["gt_distinct_corr"], section["gt_agnostic_psnr"]
    inside, null = section["gt_energy_inside"], section["gt_null_energy"]
    order = sorted(error, key=lambda name: (error[name] is None, error[name] or 0))
    rows = [[f"**{method_name(name)}**" if name == "dxai" else method_name(name), _number(error[name]),
             _number(corr[name]), _number(inside[name]), _number(null[name]), _number(psnr[name], 2),
             _number(section["agnostic_max_prob"][name])] for name in order]
    text = [_table(["method", "error ||ψ_distinct - part||² / ||part||² (lower is better)",
                    "corr(ψ_distinct, part)", "energy inside the part", "energy on images without a part",
                    "PSNR(ψ_agnostic, background) dB", "top probability on ψ_agnostic"], rows), "",
            f"Every synthetic image is a background plus an additive class part, so a decomposition can be scored "
            f"against the truth, which no natural data set allows. The reference rows show what each number "
            f"means: the true part scores error 0, the zero part error 1, and the image itself, which holds the "
            f"class part, correlates with it well yet has a large error. The correlation alone is passed by any "
            f"heatmap part w x (x contains the class part); the error is not. The classifier's top probability on "
            f"the true background is {_number(section.get('background_max_prob'))} (the yardstick of the last "
            f"column; 1/c = {1 / len(section['classes']):.3f} is neutral)."]
    if "dxai" in error:
        beaten = [method_name(name) for name, value in error.items()
                  if name not in ("dxai", "reference_truth") and value is not None and value <= error["dxai"]]
        verdict = ("the lowest of all methods and references but the true part" if not beaten else
                   f"**not** the lowest: {', '.join(beaten)} score the same or lower")
        text.append(f"DXAI's error is {_number(error['dxai'])}, {verdict}.")
    return "\n\n".join(text)


def _matching_section(matching: dict | None) -> str:
    if matching is None:
        return ("Not run: give a second classifier trained on the same data, e.g. "
                "`python train.py --stage classifier --classifier resnet18 --run-name other`, then "
                "`python train.py --stage evaluate --compare-classifier runs/<dataset>/other`.")
    names = matching["classifiers"]
    rows = []
    for made_for, methods in matching["beta_auc"].items():
        for method, aucs in methods.items():
            rows.append([f"{method_name(method)} for {made_for} ({names[made_for]})",
                         *[_number(aucs[judge]) for judge in names],
                         "yes" if matching["matched"][f"{method} made for {made_for}"] else "no"])
    header = ["parts made for", *[f"beta-AUC judged by {judge} ({names[judge]})" for judge in names],
              "lower on its own classifier"]
    dxai = matching["matched"].get("dxai made for A")
    verdict = ("" if dxai is None else
               f" DXAI's parts made for A {'do' if dxai else '**do not**'} lower A's accuracy more than B's.")
    return "\n".join([_table(header, rows), "",
                      "Parts made to explain one classifier should remove what that classifier relies on, so "
                      "they should lower its accuracy more than another classifier's trained on the same data "
                      "(the paper's table 3)." + verdict])


def _rd_section(rd: dict | None) -> str:
    if rd is None:
        return "Not run (evaluation.rd_images = 0)."
    area, settings = rd["area"], rd["settings"]
    rows = [[RD_NAMES[name], f"{area['keep'][name]:.3g}", f"{area['randomize'][name]:.3g}",
             _number(rd["seconds_per_image"][name], 2) if name in rd["seconds_per_image"] else "-"]
            for name in rd["curves"]["keep"]]
    best_keep = min(area["keep"], key=area["keep"].get)
    return "\n".join([
        f"![rate-distortion curves]({RD_PLOT})", "",
        _table(["ranking", "area, keep (lower is better)", "area, randomise (higher is better)",
                "seconds per image"], rows), "",
        f"The CartoonX paper's fig. 7a/7b on {settings['images']} validation images: coefficients ranked by each "
        f"mask, the most relevant kept (or randomised) and the rest replaced by adaptive Gaussian noise; the "
        f"distortion is the squared l2 distance of the softmax outputs, {settings['curve_samples']} noise "
        f"samples per point. CartoonX (lambda {settings['cartoonx_lam']:g}, {settings['levels']} levels of "
        f"{settings['wavelet']}) and Pixel RDE (lambda {settings['pixel_rde_lam']:g}) ran {settings['steps']} "
        f"steps at lr {settings['lr']:g} with L = {settings['num_samples']} instead of the paper's 2000 steps at "
        f"1e-3 with L = 64, to fit a CPU; the mask predictor is one forward pass. The lowest keep-curve is "
        f"{RD_NAMES[best_keep]}'s. Wavelet rankings are compared with the random wavelet ranking, pixel ones "
        "with the random pixel ranking: the representations differ, so only rankings of one representation "
        "compare directly."])


def _summary(section: dict) -> list[str]:
    """The headline comparisons, one line each."""
    lines = []
    for key, label in (("beta_auc", "beta-AUC"), ("neutral_auc", "neutral-AUC")):
        scores = _methods(section[key])
        if "dxai" in scores and len(scores) > 1:
            best = min((name for name in scores if name != "dxai"), key=scores.get)
            below = section[f"dxai_lowest_{key}"]
            lines.append(f"- {label}: DXAI {_number(scores['dxai'])}, best baseline {method_name(best)} "
                         f"{_number(scores[best])}: DXAI is {'below' if below else '**not below**'} every baseline.")
    transfer = section.get("transfer")
    if transfer and "dxai" in transfer:
        lowest = section["dxai_lowest_transfer_true_prob"]
        dxai = transfer["dxai"]
        lines.append(f"- Transfer: independent classifiers give the true class {_number(dxai['true_prob'])} "
                     f"on DXAI's agnostic part (argmax right for {_number(dxai['argmax_true'])}; "
                     f"1/c = {1 / len(section['classes']):.3f}): {'the lowest' if lowest else '**not the lowest**'} "
                     "of every method.")
    error = section["gt_distinct_error"]
    if error is not None and "dxai" in error:
        lowest = section["dxai_lowest_gt_error"]
        lines.append(f"- Ground truth: DXAI's distinct part is {_number(error['dxai'])} from the true class part "
                     f"(relative squared error; the image itself {_number(error.get('reference_image'))}, the zero "
                     f"part 1): {'the lowest' if lowest else '**not the lowest**'} of every method and reference; "
                     f"correlation {_number(section['gt_distinct_corr']['dxai'])}.")
    rd = section["rate_distortion"]
    if rd is not None:
        keep = rd["area"]["keep"]
        best = min(keep, key=keep.get)
        others = ", ".join(f"{RD_NAMES[name]} {value:.3g}" for name, value in keep.items() if name != best)
        lines.append(f"- Rate-distortion: the fastest-falling keep curve is {RD_NAMES[best]}'s (area "
                     f"{keep[best]:.3g}; {others}).")
    return lines


def _transfer_section(section: dict) -> str:
    """Transfer neutrality: the independent classifiers on every method's agnostic part."""
    transfer, c = section["transfer"], len(section["classes"])
    order = sorted(transfer, key=lambda name: transfer[name]["true_prob"])
    rows = [[f"**{method_name(name)}**" if name == "dxai" else method_name(name),
             _number(transfer[name]["true_prob"]), _number(transfer[name]["argmax_true"]),
             _number(transfer[name]["max_prob"]), _number(section["agnostic_max_prob"][name]),
             _number(section["distinct_energy"][name])] for name in order]
    background = section.get("transfer_background")
    yardstick = (f" On the true backgrounds they give the true class {_number(background['true_prob'])} and a top "
                 f"probability of {_number(background['max_prob'])}: the yardstick." if background else "")
    return "\n".join([
        _table(["method", "independent: p(true class) on ψ_agnostic", "independent: argmax = true class",
                "independent: top probability", "explained classifier: top probability", "distinct energy"], rows),
        "", f"Classifiers trained apart from the explained one (same recipe, another seed, other training images) "
        f"judge every method's agnostic part (x minus the method's distinct part); nothing was trained against "
        f"them. A part that is neutral for the explained classifier only is an adversarial example, not an "
        f"explanation: neutral means p(true class) and the argmax rate near 1/c = {1 / c:.3f} for these "
        f"classifiers too. The distinct energy says how much of the image a method removes to get there.{yardstick}"])


def _per_image(masks: dict) -> str:
    if "one_pass_ratio_per_image_median" not in masks:  # metrics of an older evaluation
        return ""
    return (f"per image: median {masks['one_pass_ratio_per_image_median']:.2f}, 90th percentile "
            f"{masks['one_pass_ratio_per_image_p90']:.2f}; ")


def _masks_section(masks: dict) -> str:
    """The masks stage's mask predictor protocol: its headline numbers and the per-image table."""
    from dxai.evaluation.masks import per_image_markdown  # matplotlib is set up there

    return "\n".join([
        f"One pass {masks['one_pass_loss_ratio']:.2f} times the reference's loss ({_per_image(masks)}the reference: "
        f"CartoonX from all-ones, {masks['settings']['reference_steps']} steps at lr "
        f"{masks['settings']['reference_lr']:g}); refined, "
        f"median {masks['steps_to_reference_median']:g} steps to the reference (90th percentile "
        f"{masks['steps_to_reference_p90']:g}), the control from all-ones "
        f"{masks['control_steps_to_reference_median']:g} "
        f"({masks['control_steps_to_reference_p90']:g}); loss at 200 steps {masks['refined_loss_ratio_at_200']:.3f} "
        f"times the reference. The refinement started from the predictor's mask on "
        f"{masks['start_from_predictor_fraction']:.0%} of the images (`masks_loss_vs_steps.png`, "
        "`masks_loss_vs_seconds.png`; every number in `metrics.json` under `masks`).", "",
        per_image_markdown(masks)])


def write_markdown(section: dict, title: str, path: Path) -> Path:
    """report.md: the tables of ``section`` with the plots beside it, one paragraph each; and the
    masks stage's per-image table when the ``metrics.json`` beside ``path`` has one."""
    settings = section["settings"]
    synthetic = section["gt_distinct_corr"] is not None
    parts = [
        f"# Evaluation report: {title}", "",
        f"Classifier: {settings['classifier']} (accuracy {_number(section['accuracy'])} on the "
        f"{section['num_images']} validation images evaluated). Every method explains the predicted class; "
        f"Integrated Gradients and Internal Influence use {settings['path_steps']} steps. Made by the evaluate "
        f"stage (`python train.py --stage evaluate`) in {section['wall_seconds']:.0f} s on {settings['device']}; "
        f"every number is in `metrics.json` under `evaluation`.", "",
        *_summary(section), "",
        "## Removing the distinct part: beta-AUC (DXAI paper, eq. 10, table 1)", "", _beta_section(section), "",
    ]
    if "dxai" in section["class_probabilities"]:
        parts += ["## Class probabilities along beta (DXAI paper, fig. 7)", "", _probability_section(section), ""]
    if section.get("transfer"):
        parts += ["## Transfer neutrality: independent classifiers on the agnostic part", "",
                  _transfer_section(section), ""]
    if synthetic:
        parts += ["## Ground truth (synthetic data)", "", _ground_truth_section(section), ""]
    parts += ["## Decompositions side by side", "", f"![decompositions by every method]({GRID})", "",
              "Rows are validation images; columns the input, " + ("the true class part, " if synthetic else "")
              + "DXAI's distinct part, agnostic part and cartoon (the mask predictor's CartoonX image), then every "
              "baseline's distinct part w x. Parts are drawn in image units around mid-grey (grey = 0, brighter "
              "= positive), all on the same scale, so a faint part looks faint. Under each row's labels: the class "
              "that the explained classifier (A) and an independent one (B) read in DXAI's agnostic part, with "
              "its probability.", "",
              "## Classifier matching (DXAI paper, table 3)", "", _matching_section(section["matching"]), "",
              "## Rate-distortion of the mask explanations (CartoonX paper, fig. 7)", "",
              _rd_section(section["rate_distortion"]), ""]
    try:
        masks = json.loads((Path(path).parent / "metrics.json").read_text()).get("masks", {})
    except (OSError, ValueError):
        masks = {}
    if masks.get("per_image"):
        parts += ["## The mask predictor, per image (masks stage)", "", _masks_section(masks), ""]
    atomic_write_text(path, "\n".join(parts))
    return path


def _wandb_tables(section: dict) -> dict:
    import wandb

    methods = list(section["beta_auc"])
    gt = section["gt_distinct_corr"] or {}
    psnr = section["gt_agnostic_psnr"] or {}
    error = section["gt_distinct_error"] or {}
    tables = {
        "beta_auc": wandb.Table(
            columns=["method", "beta_auc", "neutral_auc", "distinct_energy", "accuracy_beta0", "accuracy_beta1",
                     "agnostic_max_prob", "gt_distinct_error", "gt_distinct_corr", "gt_agnostic_psnr", "ms_per_image"],
            data=[[name, section["beta_auc"][name], section["neutral_auc"][name], section["distinct_energy"][name],
                   section["beta_accuracy"][name][0], section["beta_accuracy"][name][-1],
                   section["agnostic_max_prob"][name], error.get(name), gt.get(name), psnr.get(name),
                   section["seconds_per_image"][name] * 1000] for name in methods]),
        "beta_accuracy": wandb.Table(
            columns=["method", "beta", "accuracy"],
            data=[[name, beta, accuracy] for name in methods
                  for beta, accuracy in zip(section["betas"], section["beta_accuracy"][name])]),
    }
    if "dxai" in section["class_probabilities"]:
        probabilities = section["class_probabilities"]["dxai"]
        tables["class_probabilities"] = wandb.Table(
            columns=["true_class", "beta", "class", "mean_probability"],
            data=[[true, beta, other, probabilities[t][b][o]] for t, true in enumerate(section["classes"])
                  for b, beta in enumerate(section["betas"]) for o, other in enumerate(section["classes"])])
    if section["matching"] is not None:
        tables["matching"] = wandb.Table(
            columns=["made_for", "method", "judged_by", "beta_auc"],
            data=[[made_for, method, judge, auc] for made_for, methods_ in section["matching"]["beta_auc"].items()
                  for method, aucs in methods_.items() for judge, auc in aucs.items()])
    rd = section["rate_distortion"]
    if rd is not None:
        tables["rate_distortion"] = wandb.Table(
            columns=["mode", "ranking", "fraction", "distortion"],
            data=[[mode, name, fraction, value] for mode, curves in rd["curves"].items()
                  for name, values in curves.items() for fraction, value in zip(rd["fractions"], values)])
    return tables


def log_to_wandb(logger, section: dict, images: dict[str, Path]) -> None:
    """The report's tables (``wandb.Table``) and pictures (``wandb.Image``) on a ``WandbLogger``'s run."""
    import wandb

    run = logger.experiment
    run.log({**{f"evaluation/table/{name}": table for name, table in _wandb_tables(section).items()},
             **{f"evaluation/plot/{name}": wandb.Image(str(path)) for name, path in images.items()}})
    run.summary.update({f"evaluation/beta_auc/{name}": value for name, value in section["beta_auc"].items()})
    if section["gt_distinct_corr"] is not None:
        run.summary.update({f"evaluation/gt_distinct_corr/{name}": value
                            for name, value in section["gt_distinct_corr"].items()})
    run.finish()
