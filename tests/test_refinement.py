"""The mask predictor's evaluation protocol and the refinement schedule."""

from __future__ import annotations

import copy

import pytest
import torch

import dxai.evaluation.masks as masks_protocol
from dxai.evaluation.masks import (
    NoiseBank,
    ProtocolSettings,
    Start,
    optimisation_curves,
    reference_curves,
    reference_key,
    steps_to_reach,
)
from dxai.explain import rde
from dxai.explain.cartoonx import STARTS, CartoonX
from dxai.explain.rde import SCHEDULES, MaskOptimizer, RDEObjective, Schedule
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


def _protocol_pieces(classifier, shapes_batch, count=3, seed=13):
    images = shapes_batch(count, seed=seed)["image"]
    cartoonx = CartoonX(classifier, levels=3, num_samples=2, start_l1_weight=1.0, start_samples=4)
    representation = cartoonx.representation((32, 32))
    target = classifier(images).argmax(1)
    return images, cartoonx, representation, target


def test_a_batched_optimisation_gives_each_method_its_own_runs_losses(trained_classifier, shapes_batch,
                                                                       single_thread):
    images, cartoonx, representation, target = _protocol_pieces(trained_classifier, shapes_batch)
    bank = NoiseBank(cartoonx, images, representation, target, num_samples=4, seed=0)
    shapes = representation.mask_shapes(32)
    half = [band * 0.5 for band in ones_mask(shapes, 3)]
    schedule = SCHEDULES["refine"]
    starts = [Start(half, 0, 2), Start(ones_mask(shapes, 3), 7, 3)]
    batched = optimisation_curves(cartoonx, images, representation, target, starts, schedule, 6, bank)
    for start, together in zip(starts, batched, strict=True):
        alone = optimisation_curves(cartoonx, images, representation, target, [start], schedule, 6, bank)[0]
        assert together.steps == alone.steps
        torch.testing.assert_close(together.loss, alone.loss, rtol=0, atol=1e-6)
        for a, b in zip(together.masks, alone.masks, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    rows = [2, 0, 2]  # any subset or repetition of the images is scored on the same draws
    subset = bank([band[rows] for band in half], rows).loss
    torch.testing.assert_close(subset, bank(half).loss[rows], rtol=0, atol=1e-6)


def test_watched_steps_to_reference_equal_those_of_a_fully_measured_curve(trained_classifier, shapes_batch,
                                                                          single_thread):
    images, cartoonx, representation, target = _protocol_pieces(trained_classifier, shapes_batch)
    bank = NoiseBank(cartoonx, images, representation, target, num_samples=4, seed=0)
    ones = ones_mask(representation.mask_shapes(32), 3)
    dense = optimisation_curves(cartoonx, images, representation, target, [Start(ones, 0, 2)], SCHEDULES["refine"],
                                12, bank)[0]
    level = dense.loss[3]  # reached at step 6 or earlier by construction
    watched = optimisation_curves(cartoonx, images, representation, target, [Start(ones, 0, 12, level)],
                                  SCHEDULES["refine"], 12, bank, watch_every=2)[0]
    assert watched.steps == [0, 12]
    assert watched.reached == steps_to_reach(dense.steps, dense.loss, level)


def test_the_reference_is_cached_reused_and_keyed_by_the_classifier_weights(trained_classifier, shapes_batch,
                                                                            single_thread, tmp_path, monkeypatch):
    images, cartoonx, _, _ = _protocol_pieces(trained_classifier, shapes_batch, count=2)
    settings = ProtocolSettings(reference_steps=4, num_samples=2, bank_samples=4, reference_every=2, refine_steps=6,
                                refine_every=2, refine_curve_every=3)
    calls = []
    compute = masks_protocol.compute_reference
    monkeypatch.setattr(masks_protocol, "compute_reference", lambda *args: calls.append(1) or compute(*args))
    first, first_other, first_control, cached = reference_curves(cartoonx, images, settings, tmp_path)
    assert not cached and len(calls) == 1 and len(list(tmp_path.glob("reference_*.safetensors"))) == 1
    second, second_other, second_control, cached = reference_curves(cartoonx, images, settings, tmp_path)
    assert cached and len(calls) == 1  # the second evaluation does not optimise the reference again
    assert second.steps == first.steps == [0, 2, 4] and second_other.steps == first_other.steps == [0, 4]
    assert second_control.steps == first_control.steps and first_control.steps[-1] == settings.refine_steps
    assert second_control.reached == first_control.reached and len(first_control.reached) == len(images)
    for a, b in ((second, first), (second_other, first_other), (second_control, first_control)):
        torch.testing.assert_close(a.loss, b.loss, rtol=0, atol=0)
    assert second.seconds == first.seconds and second_control.seconds == first_control.seconds
    for a, b in zip(second.masks, first.masks, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    key = reference_key(cartoonx, images, settings)
    assert reference_key(cartoonx, images.clone(), settings) == key
    assert reference_key(cartoonx, images, ProtocolSettings(reference_steps=5, num_samples=2, bank_samples=4,
                                                            reference_every=2)) != key
    assert reference_key(cartoonx, images.flip(-1), settings) != key
    assert reference_key(cartoonx, images, ProtocolSettings(reference_steps=4, num_samples=2, bank_samples=4,
                                                            reference_every=2, refine_steps=7, refine_every=2,
                                                            refine_curve_every=3)) != key
    changed = copy.deepcopy(trained_classifier)
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1e-3
    other = CartoonX(changed, levels=3, num_samples=2)
    assert reference_key(other, images, settings) != key
    reference_curves(other, images, settings, tmp_path)
    assert len(calls) == 2 and len(list(tmp_path.glob("reference_*.safetensors"))) == 2


def test_the_start_selection_never_picks_a_start_worse_on_its_own_draws(trained_classifier, shapes_batch,
                                                                        single_thread):
    images, cartoonx, representation, target = _protocol_pieces(trained_classifier, shapes_batch, count=6, seed=14)
    shapes = representation.mask_shapes(32)
    generator = torch.Generator().manual_seed(3)
    # some masks keep the decision, some lose it (near zero), some are in between
    scale = torch.tensor([1.0, 0.02, 0.3, 0.6, 0.0, 0.1])
    predicted = [torch.rand(6, *shape, generator=generator) * scale.view(-1, *[1] * len(shape)) for shape in shapes]
    masks, starts = cartoonx.select_start(images, target, predicted, representation)
    ones = ones_mask(shapes, 6)
    candidates = [predicted, [0.5 * (band + 1) for band in predicted], ones]
    scores = cartoonx.start_scores(images, target, candidates, representation)
    assert set(starts) <= set(STARTS)
    for image, name in enumerate(starts):
        chosen = STARTS.index(name)
        assert scores[chosen, image] <= scores[:, image].min() + 1e-7
        for band, candidate in zip(masks, candidates[chosen], strict=True):
            torch.testing.assert_close(band[image], candidate[image], rtol=0, atol=0)
    assert cartoonx.start_scores(images, target, candidates, representation).equal(scores)  # fixed draws
    off = CartoonX(trained_classifier, levels=3, num_samples=2)  # no start selection: the predicted mask
    assert off.select_start(images, target, predicted)[1] == ["predictor"] * 6


def test_l1_at_zero_keeps_dropped_entries_dropped_where_the_distortion_pulls_faintly(trained_classifier, shapes_batch,
                                                                                      single_thread):
    """Adam scales its first step to about lr whatever the gradient's size: with autograd's 0 for the
    l1 term at 0, every dropped entry that the distortion pulls up, however faintly, jumps to lr."""
    images = shapes_batch(2, seed=14)["image"]
    cartoonx = CartoonX(trained_classifier, levels=3, num_samples=4)
    representation = cartoonx.representation((32, 32))
    objective = RDEObjective(trained_classifier, images, representation, None, cartoonx.lam, 4)
    shapes = representation.mask_shapes(32)
    sparse = [torch.zeros_like(band) for band in ones_mask(shapes, 2)]
    sparse[0][..., :2, :2] = 1.0  # a few kept low-pass entries, every other entry dropped
    lifted = {}
    for l1_at_zero in (False, True):
        optimizer = MaskOptimizer(objective, sparse, schedule=Schedule(0.1, l1_at_zero=l1_at_zero))
        optimizer.step()
        dropped = torch.cat([(start == 0).flatten() for start in sparse])
        moved = torch.cat([band.detach().flatten() > 0 for band in optimizer.masks])
        lifted[l1_at_zero] = float((moved & dropped).sum() / dropped.sum())
    assert lifted[False] > 0.2 and lifted[True] < 0.02


class _CountingClassifier(torch.nn.Module):
    """The classifier, counting the images it is given."""

    def __init__(self, classifier):
        super().__init__()
        self.classifier, self.seen = classifier, 0

    def forward(self, images):
        self.seen += len(images)
        return self.classifier(images)


def test_the_all_ones_track_joins_on_half_the_draws(trained_classifier, shapes_batch, single_thread):
    images = shapes_batch(3, seed=15)["image"]
    counting = _CountingClassifier(trained_classifier)
    representation = CartoonX(trained_classifier, levels=3).representation((32, 32))
    objective = RDEObjective(counting, images, representation, None, 20.0, 4)
    start = [band * 0.3 for band in ones_mask(representation.mask_shapes(32), 3)]
    schedule = Schedule(0.1, 0.1, l1_at_zero=True, ones_track_from=0.2)
    optimizer = MaskOptimizer(objective, start, schedule=schedule, total_steps=20)
    for step in range(20):
        before = counting.seen
        optimizer.step()
        assert counting.seen - before == 3 * 4  # the work of a step is unchanged by the second track
        assert (optimizer.ones_track is not None) == (step >= 4)
    assert optimizer.objective.num_samples == 2 and optimizer.ones_track.objective.num_samples == 2
    assert optimizer.ones_track.total_steps == 16 and optimizer.ones_track.ones_track is None
    assert not any(torch.equal(a, b) for a, b in zip(optimizer.masks, optimizer.ones_track.masks, strict=True))
    single = MaskOptimizer(objective.with_samples(1), start, schedule=schedule, total_steps=20)
    assert single.ones_track_step is None  # one draw cannot be shared


def test_the_returned_track_is_the_one_its_own_draws_prefer(trained_classifier, shapes_batch, single_thread):
    images = shapes_batch(3, seed=16)["image"]
    representation = CartoonX(trained_classifier, levels=3).representation((32, 32))
    objective = RDEObjective(trained_classifier, images, representation, None, 20.0, 2)
    start = [band * 0.3 for band in ones_mask(representation.mask_shapes(32), 3)]
    optimizer = MaskOptimizer(objective, start, seeds=[5, 6, 7], total_steps=6,
                              schedule=Schedule(0.1, l1_at_zero=True, ones_track_from=0.5))
    for _ in range(6):
        optimizer.step()
    masks, from_ones_track = optimizer.chosen()
    tracks = [[band.detach() for band in optimizer.masks], [band.detach() for band in optimizer.ones_track.masks]]
    scoring = objective.with_samples(rde.TRACK_SELECTION_SAMPLES)
    losses = [scoring.evaluate(track, [torch.Generator().manual_seed(seed + rde.SELECTION_SEED_OFFSET)
                                       for seed in (5, 6, 7)]).loss for track in tracks]
    assert from_ones_track == (losses[1] < losses[0]).tolist()
    for i, ones in enumerate(from_ones_track):
        for band, first, second in zip(masks, *tracks, strict=True):
            assert torch.equal(band[i], (second if ones else first)[i])
