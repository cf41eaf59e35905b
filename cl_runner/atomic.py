"""Files replaced whole: written to a temporary file in the same folder, then renamed, so a
reader (or a resume after a crash mid-write) sees the old file or the new one, never half."""

import os
import tempfile
from pathlib import Path


def replace_atomically(path: Path, write) -> None:
    """`write(tmp_path)` fills a temporary file that then replaces `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    replace_atomically(path, lambda tmp: Path(tmp).write_text(text))
