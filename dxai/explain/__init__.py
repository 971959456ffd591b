"""Explainers with one calling convention: images in [0, 1], ``attribute`` -> tensor, ``explain`` -> ``Explanation``.

``cartoonx`` and ``pixel_rde`` (rate-distortion explanations, ``rde``), ``baselines`` (captum heatmaps);
``inputs`` holds the one input check and target resolver they share.
"""
