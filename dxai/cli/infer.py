"""Explain images with a trained dxai model: distinct and agnostic parts and cartoon explanations.

``dxai-infer`` and ``python infer.py`` run this.

    python infer.py --run runs/synthetic/default photos/ scans/*.png --out explanations/
    python infer.py --run runs/afhq/default/model cat.jpg --refine-steps 50 --branches --device cuda

Inputs are files, folders or globs of any image format and size. Per image: a PNG panel
(input | distinct | agnostic | cartoon, with the predicted class) and an .npz of the tensors;
per call: summary.csv. An unreadable file is listed as failed and the others go on; the exit
code is 1 when any failed.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dxai.allocator import keep_freed_memory
from dxai.errors import DXAIError
from dxai.images import collect_inputs, load_for_model
from dxai.inference import Explainer, check_device
from dxai.io import atomic_write_text, os_error_sentence
from dxai.panels import explanation_panel

log = logging.getLogger("infer")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a run folder (runs/<dataset>/<name>) or its model/ bundle")
    parser.add_argument("inputs", nargs="+", help="image files, folders or globs")
    parser.add_argument("--out", default="explanations", help="output folder (default: explanations)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--refine-steps", type=int, default=0, help="CartoonX steps from the predicted mask")
    parser.add_argument("--target-class", help="explain this class (name or index) instead of the predicted one")
    parser.add_argument("--branches", action="store_true", help="add every generator branch to the panels")
    return parser.parse_intermixed_args(argv)  # inputs may come before, between or after flags


def check_flags(args: argparse.Namespace) -> Path:
    """Refuse bad flags before the bundle is loaded or an image read; returns the output folder
    (not created yet; it, or the folder it will be created in, is writable)."""
    if args.batch_size < 1:
        raise DXAIError(f"--batch-size must be 1 or more, not {args.batch_size}")
    if args.refine_steps < 0:
        raise DXAIError(f"--refine-steps must be 0 (the one-pass mask) or more, not {args.refine_steps}")
    check_device(args.device)
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise DXAIError(f"--out {out} is a file, not a folder; name a folder for the panels, .npz files and "
                        "summary.csv (it is created if missing)")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DXAIError(f"--out {out}: {existing} is a file, not a folder; choose another --out")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise DXAIError(f"--out {out}: cannot write in {existing} ({error.strerror or error}); choose another "
                        "--out or fix its permissions") from None
    return out


def resolve_target(explainer: Explainer, target: str | None) -> int | None:
    if target is None:
        return None
    if target in explainer.class_names:
        return explainer.class_names.index(target)
    if target.isdigit() and int(target) < len(explainer.class_names):
        return int(target)
    raise DXAIError(f"--target-class {target!r} is not one of the model's classes {explainer.class_names} "
                    f"(or an index 0 to {len(explainer.class_names) - 1})")


def output_stem(path: Path, used: set[str]) -> str:
    """A file name for one input's outputs, unique within this call."""
    stem, number = path.stem, 1
    while stem in used:
        number += 1
        stem = f"{path.stem}_{number}"
    used.add(stem)
    return stem


def save_outputs(explanation, index: int, out: Path, stem: str, explainer: Explainer, branches: bool) -> None:
    picture = explanation_panel(explanation, index, explainer.class_names, explainer.normalization, branches,
                                title=stem)
    panel_path = out / f"{stem}.png"
    tmp = panel_path.with_name(f".{panel_path.name}.tmp.png")
    picture.save(tmp)
    tmp.replace(panel_path)
    arrays = {name: value[index].cpu().numpy() for name, value in vars(explanation).items()
              if isinstance(value, torch.Tensor)}
    with (out / f".{stem}.npz.tmp").open("wb") as handle:
        np.savez_compressed(handle, **arrays)
    (out / f".{stem}.npz.tmp").replace(out / f"{stem}.npz")


def run(args: argparse.Namespace) -> int:
    out = check_flags(args)
    explainer = Explainer.from_bundle(args.run, device=args.device)
    target = resolve_target(explainer, args.target_class)
    paths = collect_inputs(args.inputs)
    out.mkdir(parents=True, exist_ok=True)
    rows, used = [], set()
    failed = 0
    progress = tqdm(total=len(paths), desc="explaining", unit="img")
    for start in range(0, len(paths), args.batch_size):
        loaded = [load_for_model(path, explainer.channels, explainer.img_size)
                  for path in paths[start:start + args.batch_size]]
        good = [item for item in loaded if item.image is not None]
        for item in loaded:
            if item.error:
                failed += 1
                log.warning("%s: %s", item.path, item.error)
                rows.append([str(item.path), "", "", "failed", item.error])
        if good:
            images = torch.stack([item.image for item in good])
            explanation = explainer.explain(images, target=target, refine_steps=args.refine_steps).to("cpu")
            for index, item in enumerate(good):
                stem = output_stem(item.path, used)
                save_outputs(explanation, index, out, stem, explainer, args.branches)
                predicted = int(explanation.predicted[index])
                rows.append([str(item.path), explainer.class_names[predicted],
                             f"{float(explanation.probabilities[index, predicted]):.4f}", "ok",
                             "; ".join(item.notes)])
        progress.update(len(loaded))
    progress.close()
    buffer = io.StringIO()
    csv.writer(buffer).writerows([["file", "predicted_class", "probability", "status", "note"], *rows])
    atomic_write_text(out / "summary.csv", buffer.getvalue())
    print(f"{len(paths) - failed} explained, {failed} failed; panels, .npz files and summary.csv are in {out}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    warnings.filterwarnings("ignore", message=".*pkg_resources is deprecated.*")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    keep_freed_memory()
    try:
        return run(args)
    except DXAIError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a full disk or a folder that became unwritable
        print(f"error: {os_error_sentence(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
