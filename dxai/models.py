"""The networks and explainers a configuration describes: one place that maps settings to constructors.

The exported bundle stores the same settings (``*_settings``) so that inference rebuilds the
networks without the configuration.
"""

from __future__ import annotations

from torch import nn

from dxai.config import Config
from dxai.explain.cartoonx import CartoonX
from dxai.nets.classifier import build_classifier
from dxai.nets.discriminator import Discriminator
from dxai.nets.generator import Generator
from dxai.nets.mapping import MappingNetwork
from dxai.nets.mask_predictor import MaskPredictor
from dxai.normalization import Normalization


def build_configured_classifier(cfg: Config) -> nn.Module:
    return build_classifier(cfg.classifier.arch, cfg.data.num_classes, cfg.data.img_channels, cfg.data.img_size)


def generator_settings(cfg: Config) -> dict:
    d = cfg.decomposition
    return {"img_size": cfg.data.img_size, "img_channels": cfg.data.img_channels, "num_branches": d.num_branches,
            "base_channels": d.base_channels, "max_channels": d.max_channels, "num_downsample": d.num_downsample,
            "num_bottleneck": d.num_bottleneck, "style_dim": d.style_dim,
            "encoder_blocks": list(d.encoder_blocks) if d.encoder_blocks else 1, "skip": d.skip}


def build_generator(cfg: Config) -> Generator:
    return Generator(**generator_settings(cfg))


def build_mapping(cfg: Config, generator: Generator) -> MappingNetwork:
    d = cfg.decomposition
    return MappingNetwork(d.latent_dim, d.style_dim, cfg.data.num_classes, d.mapping_hidden,
                          num_style_blocks=generator.num_style_blocks if d.style_per_block else 1)


def build_discriminator(cfg: Config) -> Discriminator:
    d = cfg.decomposition
    return Discriminator(cfg.data.img_size, cfg.data.img_channels, cfg.data.num_classes, d.disc_base_channels,
                         d.disc_max_channels)


def predictor_settings(cfg: Config) -> dict:
    m, c = cfg.masks, cfg.cartoonx
    return {"img_size": cfg.data.img_size, "channels": cfg.data.img_channels, "num_classes": cfg.data.num_classes,
            "levels": c.levels, "wavelet": c.wavelet, "mode": c.mode, "base_channels": m.base_channels,
            "max_channels": m.max_channels, "initial_keep": m.initial_keep,
            "coefficient_inputs": m.coefficient_inputs}


def build_mask_predictor(cfg: Config) -> MaskPredictor:
    return MaskPredictor(**predictor_settings(cfg))


def cartoonx_settings(cfg: Config) -> dict:
    c = cfg.cartoonx
    return {"wavelet": c.wavelet, "levels": c.levels, "mode": c.mode, "lam": c.lam, "lr": c.lr,
            "num_samples": c.num_samples, "distortion": c.distortion,
            "refine_schedule": {"lr": c.refine_lr, "final_lr_fraction": c.refine_final_lr_fraction,
                                "num_samples": c.refine_num_samples, "l1_at_zero": c.refine_l1_at_zero,
                                "ones_track_from": c.refine_ones_track_from},
            "start_l1_weight": cfg.masks.start_l1_weight, "start_samples": cfg.masks.start_samples}


def build_cartoonx(cfg: Config, classifier: nn.Module, num_samples: int | None = None,
                   mask_predictor: MaskPredictor | None = None) -> CartoonX:
    """CartoonX with the run's settings for a classifier taking [-1, 1] images."""
    settings = {**cartoonx_settings(cfg), "num_samples": num_samples or cfg.cartoonx.num_samples}
    return CartoonX(classifier, normalization=Normalization.symmetric(cfg.data.img_channels),
                    steps=cfg.cartoonx.steps, mask_predictor=mask_predictor, **settings)
