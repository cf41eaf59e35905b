"""How a run is named: one place for the W&B group and the report's row labels."""

KINDS = ("class_il", "task_il")  # the two accuracy matrices every run reports
NME = "nme"  # the third, where a memory is on: nearest mean of exemplars (class-IL)


def method_label(choices: dict) -> str:
    """The method's config name, with an add-on that is not the method's namesake: lwf+sd."""
    method, addon = choices.get("method", "?"), choices.get("addon")
    return f"{method}+{addon}" if addon and addon != method else method


def split(config: dict) -> tuple[int, int]:
    """The class-incremental split: classes of the first task (0: equal steps) and the steps."""
    return config.get("init_classes") or 0, config.get("steps")


def protocol_label(config: dict) -> str:
    """`B0 10 steps` for a class split; `sequence` for data sets one after another."""
    if config.get("sequence"):
        return "sequence"
    base, steps = split(config)
    return f"B{base} {steps} steps"


def group_name(choices: dict, config: dict) -> str:
    """All seeds of one setting: method-dataset-B<base>-<steps>steps, or method-a+b-sequence."""
    protocol = "sequence" if config.get("sequence") else "B{}-{}steps".format(*split(config))
    return f"{method_label(choices)}-{choices.get('dataset', 'data')}-{protocol}"
