"""Where results go: the console (rich), the run folder (JSON/CSV/YAML) and, optionally, W&B.

Every logger implements the same six hooks; `Loggers` calls each of them in turn. A task's
stages ("head", "main", DER's "balanced", ...) each begin with `stage_start`; the epochs that
follow are that stage's.
"""


class Logger:
    def run_start(self, results) -> None: ...
    def stage_start(self, task, stage: str, epochs: int, batches_per_epoch: int) -> None: ...
    def batch_end(self) -> None: ...
    def epoch_end(self, task, epoch: int, stats: dict) -> None: ...
    def task_end(self, results) -> None: ...
    def run_end(self, results) -> None: ...


class Loggers(Logger):
    def __init__(self, *loggers: Logger):
        self.loggers = loggers

    def run_start(self, results):
        for logger in self.loggers:
            logger.run_start(results)

    def stage_start(self, task, stage, epochs, batches_per_epoch):
        for logger in self.loggers:
            logger.stage_start(task, stage, epochs, batches_per_epoch)

    def batch_end(self):
        for logger in self.loggers:
            logger.batch_end()

    def epoch_end(self, task, epoch, stats):
        for logger in self.loggers:
            logger.epoch_end(task, epoch, stats)

    def task_end(self, results):
        for logger in self.loggers:
            logger.task_end(results)

    def run_end(self, results):
        for logger in self.loggers:
            logger.run_end(results)
