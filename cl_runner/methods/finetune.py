"""Fine-tuning: no protection, the lower bound. Without exemplars the cross-entropy covers the
new head's logits only (FACIL, PyCIL and the LwF paper's fine-tuning baseline); with exemplars,
or with `all_logits=true`, all seen classes."""

from cl_runner.methods.base import Method


class Finetune(Method):
    def __init__(self, all_logits: bool = False):
        self.all_logits = all_logits
