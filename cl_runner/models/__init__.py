from cl_runner.models.incremental import IncrementalNet

__all__ = ["IncrementalNet"]
