"""Hydra's `instantiate`, with a user error raised inside a constructor passed through as itself
(one line, exit 2) rather than wrapped in Hydra's InstantiationException."""

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from cl_runner.errors import UserError


def build(node: DictConfig, **kwargs):
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, UserError):
            raise error.__cause__ from None
        raise
