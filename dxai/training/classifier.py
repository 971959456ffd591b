"""The classifier to be explained, as a LightningModule: cross-entropy, AdamW, one-cycle schedule.

On synthetic data it can also be trained neutral on the true backgrounds (a cross-entropy toward
the uniform distribution), so that a perfect agnostic part is exactly the classifier's neutral point.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F

from dxai.measures.decomposition import top_probability


def neutrality_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy toward the uniform distribution: log(c) exactly when ``logits`` are neutral."""
    return -F.log_softmax(logits, dim=1).mean(1).mean()


class ClassifierModule(pl.LightningModule):
    def __init__(self, model: nn.Module, lr: float, weight_decay: float, max_steps: int,
                 neutral_background_weight: float = 0.0):
        super().__init__()
        self.model = model
        self.lr, self.weight_decay, self.max_steps = lr, weight_decay, max_steps
        self.neutral_background_weight = neutral_background_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx):
        logits = self.model(batch["image"])
        loss = F.cross_entropy(logits, batch["label"])
        accuracy = (logits.argmax(1) == batch["label"]).float().mean()
        self.log_dict({"train/loss": loss, "train/accuracy": accuracy}, prog_bar=True)
        if self.neutral_background_weight:
            neutrality = neutrality_loss(self.model(batch["background"]))
            self.log("train/background_neutrality", neutrality)
            loss = loss + self.neutral_background_weight * neutrality
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self.model(batch["image"])
        self.log("val_accuracy", (logits.argmax(1) == batch["label"]).float().mean(), prog_bar=True,
                 sync_dist=True)
        self.log("val/loss", F.cross_entropy(logits, batch["label"]), sync_dist=True)
        if "background" in batch:
            self.log("val_background_max_prob", top_probability(self.model, batch["background"]).mean(),
                     sync_dist=True)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.lr, total_steps=self.max_steps,
                                                       pct_start=0.15)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
