"""A Lightning ``Trainer`` run with a raw timm scheduler stepped by the ``lr_scheduler_step`` override Lightning
documents, ``scheduler.step(epoch=self.current_epoch)``: the index of the epoch just done."""

import pytorch_lightning as pl
import torch
from timm.scheduler import CosineLRScheduler
from torch.utils.data import DataLoader


class Model(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        scheduler = CosineLRScheduler(optimizer, t_initial=6, warmup_t=2, warmup_lr_init=1e-3)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def lr_scheduler_step(self, scheduler, metric):
        scheduler.step(epoch=self.current_epoch)


if __name__ == "__main__":
    torch.manual_seed(0)
    trainer = pl.Trainer(max_epochs=6, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Model(), DataLoader(torch.randn(12, 8), batch_size=4))  # 3 batches per epoch
