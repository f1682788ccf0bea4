"""The BroRL trainer: ProRLv2 at large N (docs/training.md).

from brorl.trainer import Trainer, TrainConfig
trainer = Trainer(TrainConfig(steps=10, out=Path("runs/x")))
trainer.run()
"""

from brorl.trainer.config import TrainConfig
from brorl.trainer.loop import Trainer, good_turing_unseen

__all__ = ["TrainConfig", "Trainer", "good_turing_unseen"]
