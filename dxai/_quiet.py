"""The one place where noise from dxai's dependencies is silenced at its source.

Imported first by ``dxai/__init__.py``, so it acts before any dependency is imported. It silences,
by their exact messages, only what a dxai user cannot act on:

- pytorch_wavelets' ``pkg_resources is deprecated`` warning (it imports pkg_resources);
- Lightning's notices about its own internals (``_pytree``'s ``LeafSpec`` deprecation) and its reminder,
  on resuming, to pass the callbacks that made the checkpoint (dxai's stages always do), and its note
  on modules in eval mode (dxai's frozen classifiers are, on purpose);
- Lightning's advertisements ("💡 Tip: ... litlogger / litmodels"), logged through its rank-zero logger.

Warnings raised by dxai itself, and every other warning, still show. Nothing here imports Lightning.
"""

from __future__ import annotations

import logging
import warnings

# (message regex, category, module regex: where the warning is attributed) of warnings that a dxai user
# cannot act on
_WARNINGS = (
    (r"pkg_resources is deprecated", UserWarning, r"(pytorch_wavelets|pkg_resources)(\.|$)"),
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"(pytorch_lightning|lightning)(\.|$)"),
    # dxai's frozen classifiers stay in eval mode on purpose (dxai.training.common.FrozenClassifier)
    (r"Found \d+ module\(s\) in eval mode at the start of training", Warning, r"(pytorch_lightning|lightning)(\.|$)"),
    # on resuming: dxai's stages always give the Trainer the callbacks that made the checkpoint
    (r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint", Warning,
     r"(pytorch_lightning|lightning)(\.|$)"),
)
_LIGHTNING_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                      "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
_ADVERTISEMENTS = ("💡 Tip:",)


class _NoAdvertisements(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage().lstrip()
        return not message.startswith(_ADVERTISEMENTS)


_FILTER = _NoAdvertisements()


def quiet() -> None:
    """Install the filters (idempotent)."""
    for message, category, module in _WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name in _LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


quiet()
