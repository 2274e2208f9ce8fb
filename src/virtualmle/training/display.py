"""The training progress display: a rich bar over the current epoch's batches and one line per epoch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from virtualmle.training.config import TrainConfig

if TYPE_CHECKING:
    from virtualmle.training.trainer import EpochLog


class EpochDisplay:
    """rich progress: a bar over the current epoch's batches and one summary line per epoch."""

    def __init__(self, config: TrainConfig, num_batches: int) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.config = config
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[max_epochs]}"),
            BarColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            transient=True,
        )
        self.task = self.progress.add_task("train", total=num_batches, epoch=1,
                                           max_epochs=config.max_epochs, loss=float("nan"))
        self.progress.start()

    def step(self, epoch: int, loss: float) -> None:
        self.progress.update(self.task, advance=1, epoch=epoch, loss=loss)

    def epoch_done(self, log: EpochLog) -> None:
        mark = " *" if log.is_best else ""
        also = "" if log.metric == "ndcg@10" else f"  ndcg@10 {log.valid['ndcg@10']:.4f}"
        self.progress.console.print(
            f"epoch {log.epoch:3d}  loss {log.train_loss:.4f}  valid {log.metric} "
            f"{log.score:.4f}{also}  {log.seconds:.1f}s{mark}"
        )
        self.progress.reset(self.task, epoch=log.epoch + 1, max_epochs=self.config.max_epochs,
                            loss=log.train_loss)

    def close(self) -> None:
        self.progress.stop()
