"""Fine-tuning: no protection, the lower bound. Without exemplars the cross-entropy covers the
new head's logits only (FACIL, PyCIL and the LwF paper's fine-tuning baseline); with exemplars,
or with `all_logits=true`, all seen classes. `head_epochs`: the LwF paper's warm-up, which it
gives fine-tuning too."""

from cl_runner.methods.base import Method


class Finetune(Method):
    def __init__(self, all_logits: bool = False, head_epochs: int = 0):
        self.all_logits, self.head_epochs = all_logits, head_epochs
