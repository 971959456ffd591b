import json

import pytest
import torch
from safetensors.torch import load_file

from dxai.config import load_config
from dxai.evaluation.report import _masks_section
from dxai.models import build_configured_classifier, build_mask_predictor
from dxai.pipeline import run_pipeline
from dxai.run_folder import RunFolderError, load_mask_predictor, predictor_path, save_weights
from dxai.stages import STAGES
from dxai.stages import masks as masks_stage
from dxai.stages.masks import is_done
from dxai.training.masks import MaskModule, ramped_lam, unrolled_masks
from dxai.wavelets import mask_shapes

TINY_MASKS = ["masks.max_steps=3", "masks.batch_size=8", "masks.num_samples=2", "masks.base_channels=8",
              "masks.image_every_steps=2", "masks.num_panel_images=2", "masks.eval_images=4",
              "masks.eval_reference_steps=6", "masks.eval_refine_steps=4", "masks.eval_num_samples=2",
              "masks.eval_bank_samples=2", "masks.eval_reference_every=2", "masks.eval_refine_every=2",
              "masks.eval_refine_curve_every=2"]


def test_masks_stage_comes_after_the_classifier_and_the_decomposition():
    names = list(STAGES)
    assert names.index("classifier") < names.index("masks")
    if "decomposition" in names:
        assert names.index("decomposition") < names.index("masks")


def test_masks_stage_end_to_end_writes_checkpoint_metrics_and_plot(tiny_overrides):
    cfg = load_config("synthetic", tiny_overrides + TINY_MASKS + ["masks.unroll_steps=1",  # semi-amortized
                                                                  "masks.ema_beta=0.5",
                                                                  "masks.image_every_steps=3"])  # last.ckpt at the end
    run_pipeline(cfg, "classifier")
    run_dir = run_pipeline(cfg, "masks")

    assert predictor_path(run_dir).is_file() and is_done(cfg, run_dir)
    masks = json.loads((run_dir / "report" / "metrics.json").read_text())["masks"]
    assert masks["train_steps"] == 3
    assert masks["eval_images"] == 4 and masks["settings"]["num_samples"] == 2
    assert masks["curves"]["reference"]["steps"] == [0, 2, 4, 6]
    assert masks["curves"]["reference, seed 1"]["steps"] == [0, 6]
    assert masks["curves"]["refined from the predictor"]["steps"] == [0, 2, 4]
    assert masks["curves"]["control: refined from all-ones"]["steps"] == [0, 2, 4]  # from the reference's cache
    assert masks["one_pass_loss_ratio"] == pytest.approx(masks["one_pass_loss"] / masks["reference_final_loss"])
    ratios = sorted(row["one_pass_loss"] / row["reference_loss"] for row in masks["per_image"])
    assert masks["one_pass_ratio_per_image_median"] == pytest.approx((ratios[1] + ratios[2]) / 2, rel=1e-5)
    assert ratios[2] <= masks["one_pass_ratio_per_image_p90"] <= ratios[3]
    assert 0 <= masks["steps_to_reference_median"] <= 4 and 0 <= masks["fraction_within_200"] <= 1
    assert masks["one_pass_ms_per_image"] > 0 and masks["reference_s_per_image"] > 0
    assert masks["reference_source"] == "background process"  # computed while the predictor trained
    assert len(list((run_dir / "checkpoints" / "masks").glob("reference_*.safetensors"))) == 1
    assert [row["image"] for row in masks["per_image"]] == [0, 1, 2, 3]
    assert {row["start"] for row in masks["per_image"]} <= {"predictor", "blend", "ones"}
    assert 0 <= masks["start_from_predictor_fraction"] <= 1 and sum(masks["start_counts"].values()) == 4
    assert "| image | one-pass loss |" in (run_dir / "report" / "masks.md").read_text()
    section = _masks_section(masks)  # report.md's part, from metrics.json
    assert "per image: median" in section and section.count("\n| ") == 1 + 4  # the header row and one row per image
    assert (run_dir / "report" / "masks_loss_vs_steps.png").is_file()
    assert (run_dir / "report" / "masks_loss_vs_seconds.png").is_file()
    assert list((run_dir / "report" / "panels").glob("masks_evaluation_*.png"))

    predictor = load_mask_predictor(cfg, run_dir)
    out = predictor(torch.rand(2, 3, 16, 16), torch.tensor([0, 1]))
    assert [tuple(band.shape[1:]) for band in out] == mask_shapes(16, cfg.cartoonx.levels)
    # the kept predictor is the EMA of the weights, which the checkpoint holds beside the trained ones
    state = torch.load(run_dir / "checkpoints" / "masks" / "last.ckpt", weights_only=False)["state_dict"]
    saved = load_file(str(predictor_path(run_dir)))
    assert all(torch.equal(saved[name], state[f"predictor_ema.{name}"]) for name in saved)
    assert not all(torch.equal(saved[name], state[f"predictor.{name}"]) for name in saved)


def test_loading_a_predictor_of_other_settings_is_a_clear_error(tiny_overrides):
    cfg = load_config("synthetic", tiny_overrides + TINY_MASKS)
    with pytest.raises(RunFolderError, match="run the masks stage first"):
        load_mask_predictor(cfg, cfg.run_dir)
    save_weights(build_mask_predictor(cfg), predictor_path(cfg.run_dir))
    assert load_mask_predictor(cfg, cfg.run_dir).training is False
    wider = load_config("synthetic", tiny_overrides + TINY_MASKS + ["masks.base_channels=16"])
    with pytest.raises(RunFolderError, match="does not fit"):
        load_mask_predictor(wider, wider.run_dir)


@pytest.mark.parametrize("saved_beta,resumed_beta", [(0.0, 0.999), (0.999, 0.0)])
def test_a_checkpoint_resumes_with_or_without_the_ema(tiny_overrides, saved_beta, resumed_beta):
    def module(beta):
        cfg = load_config("synthetic", tiny_overrides + TINY_MASKS + [f"masks.ema_beta={beta}"])
        return MaskModule(cfg, build_configured_classifier(cfg), torch.rand(2, 3, 16, 16))

    saved, resumed = module(saved_beta), module(resumed_beta)
    checkpoint = {"state_dict": dict(saved.state_dict())}
    saved.on_save_checkpoint(checkpoint)
    resumed.on_load_checkpoint(checkpoint)
    resumed.load_state_dict(checkpoint["state_dict"])  # strict: every key present, none left over
    assert torch.equal(next(resumed.trained_predictor.parameters()), next(saved.predictor.parameters()))


def test_lam_ramps_up_from_zero_then_stays():
    assert [ramped_lam(step, 10, 20.0) for step in (0, 5, 10, 50)] == [0.0, 10.0, 20.0, 20.0]
    assert ramped_lam(0, 0, 20.0) == 20.0


class _Quadratic:
    """An objective whose gradient is known: sum over entries of (m - 0.3)^2."""

    def loss(self, masks):
        value = sum(((band - 0.3) ** 2).flatten(1).sum(1) for band in masks)
        return type("Terms", (), {"loss": value})


def test_unrolled_steps_move_by_the_gradient_sign_and_pass_gradients_straight_through():
    start = torch.tensor([[0.0, 0.25, 0.9, 1.0]], requires_grad=True)
    (moved,) = unrolled_masks(_Quadratic(), [start], steps=2, step_size=0.1)
    # towards 0.3 by 0.1 a step, clamped to [0, 1]; 0.25 overshoots once and comes back
    assert moved.detach()[0].tolist() == pytest.approx([0.2, 0.25, 0.7, 0.8])
    moved.sum().backward()
    assert start.grad.tolist() == [[1.0, 1.0, 1.0, 1.0]]


def test_the_reference_starts_early_and_the_stage_takes_it_over(tiny_overrides):
    """What the pipeline does before the decomposition stage: once the classifier exists, the masks
    stage's reference (and control) runs in a background process, which the stage then waits for
    instead of starting its own."""
    cfg = load_config("synthetic", tiny_overrides + TINY_MASKS)
    masks_stage.start_early(cfg, cfg.run_dir)
    assert not masks_stage._EARLY  # no classifier yet: nothing to start
    run_dir = run_pipeline(cfg, "classifier")
    masks_stage.start_early(cfg, run_dir)
    masks_stage.start_early(cfg, run_dir)  # called before every later stage: still one process
    assert len(masks_stage._EARLY) == 1
    (early,) = masks_stage._EARLY.values()
    early.join()
    assert early.exitcode == 0
    run_pipeline(cfg, "masks")
    assert not masks_stage._EARLY
    masks = json.loads((run_dir / "report" / "metrics.json").read_text())["masks"]
    assert masks["reference_source"] == "background process"
    assert len(list((run_dir / "checkpoints" / "masks").glob("reference_*.safetensors"))) == 1
