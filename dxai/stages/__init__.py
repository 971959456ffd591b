"""The pipeline's stage runners, in order: each module has ``run(cfg, run_dir) -> dict`` and
``is_done(cfg, run_dir) -> bool``, and only composes training, evaluation and the run folder.

A stage that trains nothing sets ``RANK_ZERO_ONLY = True``: under DDP every process runs the
pipeline, and such a stage writes its files once, on rank 0.
"""

STAGES: dict[str, str] = {
    "classifier": "dxai.stages.classifier",
    "decomposition": "dxai.stages.decomposition",
    "masks": "dxai.stages.masks",
    "export": "dxai.stages.export",
    "evaluate": "dxai.stages.evaluate",
}
