"""The mask predictor's evaluation protocol and the refinement schedule."""

from __future__ import annotations

import pytest
import torch

from dxai.evaluation.masks import NoiseBank, steps_to_reach
from dxai.explain.cartoonx import CartoonX
from dxai.explain.rde import SCHEDULES, Schedule
from dxai.wavelets import ones_mask


def test_two_scorings_of_a_mask_on_the_bank_are_equal(trained_classifier, shapes_batch, single_thread):
    images = shapes_batch(3, seed=11)["image"]
    cartoonx = CartoonX(trained_classifier, levels=3)
    representation = cartoonx.representation((32, 32))
    target = trained_classifier(images).argmax(1)
    bank = NoiseBank(cartoonx, images, representation, target, num_samples=8, seed=0)
    masks = [band * 0.5 for band in ones_mask(representation.mask_shapes(32), 3)]
    torch.testing.assert_close(bank(masks).loss, bank(masks).loss, rtol=0, atol=0)
    other = NoiseBank(cartoonx, images, representation, target, num_samples=8, seed=1)
    assert not torch.equal(bank(masks).loss, other(masks).loss)


def test_steps_to_reach_on_a_hand_made_curve():
    loss = torch.tensor([[1.0, 1.0, 1.0], [0.6, 0.9, 1.0], [0.4, 0.5, 1.0], [0.3, 0.45, 1.0]])
    assert steps_to_reach([0, 5, 10, 15], loss, torch.tensor([0.5, 0.5, 0.5])) == [10, 10, None]


def test_cosine_schedule_decays_from_lr_to_its_final_fraction():
    schedule = Schedule(lr=0.1, final_lr_fraction=0.1)
    assert schedule.lr_at(0, 100) == pytest.approx(0.1)
    assert schedule.lr_at(50, 100) == pytest.approx(0.055)
    assert schedule.lr_at(100, 100) == pytest.approx(0.01)
    assert Schedule(lr=0.1).lr_at(70, 100) == 0.1


def test_refinement_schedule_lowers_the_loss_faster_than_the_paper_lr(trained_classifier, shapes_batch,
                                                                        single_thread):
    images = shapes_batch(4, seed=12)["image"]
    cartoonx = CartoonX(trained_classifier, levels=3, num_samples=4)
    start = [band * 0.9 for band in ones_mask(cartoonx.representation((32, 32)).mask_shapes(32), 4)]
    paper = cartoonx.optimize(images, init=start, steps=40, schedule="paper").history.loss[-1].mean()
    refined = cartoonx.optimize(images, init=start, steps=40).history.loss[-1].mean()  # a given start: "refine"
    assert cartoonx.schedule_for(start) == SCHEDULES["refine"] and cartoonx.schedule_for("ones").lr == 1e-3
    assert refined < 0.8 * paper
