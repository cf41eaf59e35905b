"""cl_runner: config-driven class-incremental learning experiments."""

__version__ = "0.1.0"
