"""Where the shipped Hydra configs live, for editable and regular installs alike."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The wheel ships configs/ inside the package; a source checkout keeps it at the top."""
    for candidate in (_PACKAGE / "configs", _PACKAGE.parent / "configs"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"configs/train.yaml not found beside {_PACKAGE}")
