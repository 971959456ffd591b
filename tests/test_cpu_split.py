"""The explainer's batch split across CPU cores: the same outputs as the whole batch, only when it pays."""

import torch

from dxai.config import load_config
from dxai.explain.cpu_split import branch_work, split_branches_over_cores, split_over_cores
from dxai.models import build_generator, predictor_settings
from dxai.nets.mask_predictor import MaskPredictor


def test_chunks_run_one_per_thread_and_join_to_the_whole_batchs_outputs():
    cfg = load_config("synthetic")
    torch.manual_seed(0)
    generator = build_generator(cfg).eval()
    predictor = MaskPredictor(**predictor_settings(cfg)).eval()
    images, labels = torch.rand(5, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1])
    style = torch.randn(5, cfg.decomposition.style_dim)
    seen = []

    def generate(chunk, chunk_style):
        seen.append(len(chunk))
        return generator(chunk, chunk_style)

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            whole_branches, whole_masks = generator(images, style), predictor(images, labels)
            branches, masks = split_over_cores(generate, images, style), split_over_cores(predictor, images, labels)
        assert sorted(seen) == [2, 3] and torch.get_num_threads() == 2
        assert torch.allclose(branches, whole_branches, atol=1e-5)
        assert isinstance(masks, list) and len(masks) == len(whole_masks)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(masks, whole_masks))
        seen.clear()
        split_over_cores(generate, images, style)  # with gradients: one call, the whole batch
        assert seen == [5]
        torch.set_num_threads(1)
        with torch.no_grad():
            split_over_cores(generate, images, style)
        assert seen == [5, 5]
    finally:
        torch.set_num_threads(threads)


def test_branch_work_covers_every_branch_and_image_once_and_balances_the_threads():
    for branches, batch, threads in [(5, 4, 2), (5, 1, 2), (4, 3, 2), (5, 7, 3), (2, 5, 4)]:
        work = branch_work(branches, batch, threads)
        covered = torch.zeros(batch, branches, dtype=torch.long)
        for units in work:
            for indices, rows in units:
                covered[rows, indices] += 1
        assert bool((covered == 1).all())
        loads = [sum(len(indices) * (rows.stop - rows.start) for indices, rows in units) for units in work]
        assert max(loads) - min(loads) <= branches  # at most one image's branches apart
    assert branch_work(5, 4, 2) == [[([0, 1], slice(0, 4)), ([4], slice(0, 2))],
                                    [([2, 3], slice(0, 4)), ([4], slice(2, 4))]]


def test_the_generator_split_by_branches_equals_its_forward():
    cfg = load_config("synthetic")
    torch.manual_seed(0)
    generator = build_generator(cfg).eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            for batch in (1, 3, 4):
                images, style = torch.rand(batch, 3, 32, 32), torch.randn(batch, cfg.decomposition.style_dim)
                split = split_branches_over_cores(generator, images, style)
                assert torch.allclose(split, generator(images, style), atol=1e-5)
                assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
