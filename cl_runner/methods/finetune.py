"""Fine-tuning: cross-entropy on all seen classes, no protection. The lower bound."""

from cl_runner.methods.base import Method


class Finetune(Method):
    pass
