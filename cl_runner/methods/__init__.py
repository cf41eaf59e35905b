from cl_runner.methods.base import Batch, Method

__all__ = ["Batch", "Method"]
