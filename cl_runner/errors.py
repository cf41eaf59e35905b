"""Errors a user can cause: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """A mistake in the command line, the configs or the files a run points at."""


class ConfigError(UserError):
    """A config value that is out of range, of the wrong type, or inconsistent with another."""


class NonFiniteLossError(UserError):
    """Training diverged; the message names the task, epoch and batch."""
