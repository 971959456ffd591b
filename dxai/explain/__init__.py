"""Explainers of image classifiers with a captum-like ``attribute(images, target=...)``."""

from dxai.explain.cartoonx import CartoonX
from dxai.explain.classifier_wrapper import NormalizedClassifier
from dxai.explain.pixel_rde import PixelRDE, PixelRepresentation
from dxai.explain.rde import RDE, MaskOptimizer, RDEHistory, RDELoss, RDEObjective, RDEResult, rde_loss

__all__ = ["CartoonX", "MaskOptimizer", "NormalizedClassifier", "PixelRDE", "PixelRepresentation", "RDE",
           "RDEHistory", "RDELoss", "RDEObjective", "RDEResult", "rde_loss"]
