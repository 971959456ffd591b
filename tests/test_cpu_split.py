"""The explainer's batch split across CPU cores: the same outputs as the whole batch, only when it pays."""

import torch

from dxai.config import load_config
from dxai.explain.cpu_split import split_over_cores
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
