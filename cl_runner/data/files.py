"""Images kept as files on disk (ImageNet scale: too large for memory), decoded by DataLoader
workers into uint8 batches of the same form the in-memory data sets have.

`FileImages` stands where an in-memory uint8 tensor stands in an `ImageSet`: indexing it gives
a lazy subset, never pixels. Pixels come from `batches()` (evaluation, herding: resize and
centre crop) and from `FileLoader` (training: random resized crop and flip in the workers),
both through a DataLoader with worker processes and pinned memory.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from cl_runner.data.loader import DeviceLoader, spans
from cl_runner.distributed import Ranks
from cl_runner.errors import ConfigError

RESIZE_RATIO = 256 / 224  # evaluation: resize the short side to 256 for a 224 crop


@dataclass(frozen=True)
class Style:
    """How an image is distorted for training. `resized`: a random resized crop (the ImageNet
    recipe); `crop`: the short side resized to size * 256/224, then a random size x size crop
    (the LwF and MAS recipe). Evaluation always resizes the short side and takes the centre."""

    crop: str = "resized"
    flip: bool = True


class ArrayImage:
    """One image of an in-memory uint8 array [N, C, H, W], decoded by the workers like a file
    (a small data set in a sequence of large ones). The array is shared, not copied, per item."""

    __slots__ = ("array", "index")

    def __init__(self, array: np.ndarray, index: int):
        self.array, self.index = array, index

    def open(self) -> Image.Image:
        pixels = self.array[self.index]
        return Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))

    def __str__(self) -> str:
        return f"in-memory image {self.index}"


def open_image(source: "str | ArrayImage") -> Image.Image:
    return Image.open(source) if isinstance(source, str) else source.open()


class FileImages:
    """A list of image files (or `ArrayImage`s), all delivered as uint8 3 x size x size; each
    with its training `Style`."""

    def __init__(self, paths: list, size: int, workers: int = 4, styles: "list[Style] | Style | None" = None):
        self.paths, self.size, self.workers = list(paths), size, workers
        if styles is None or isinstance(styles, Style):
            styles = [styles or Style()] * len(self.paths)
        self.styles = list(styles)

    @classmethod
    def concat(cls, parts: "list[FileImages]", size: int, workers: int) -> "FileImages":
        paths = [p for part in parts for p in part.paths]
        return cls(paths, size, workers, [s for part in parts for s in part.styles])

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), 3, self.size, self.size)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def to(self, device) -> "FileImages":
        return self  # files stay on disk; batches move to the device as they are decoded

    def __getitem__(self, key) -> "FileImages":
        if isinstance(key, slice):
            return FileImages(self.paths[key], self.size, self.workers, self.styles[key])
        index = torch.as_tensor(key).cpu()
        if index.dtype == torch.bool:
            index = index.nonzero().squeeze(1)
        rows = index.tolist()
        return FileImages(
            [self.paths[i] for i in rows], self.size, self.workers, [self.styles[i] for i in rows]
        )


def transform(size: int, train: bool, style: Style = Style()) -> v2.Transform:
    resize = v2.Resize(round(size * RESIZE_RATIO), antialias=True)
    if not train:
        steps = [resize, v2.CenterCrop(size)]
    elif style.crop == "resized":  # the standard ImageNet training distortion
        steps = [v2.RandomResizedCrop(size, antialias=True)]
    else:
        steps = [resize, v2.RandomCrop(size)]
    if train and style.flip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose([v2.PILToTensor(), *steps])


class _Decode(Dataset):
    """One image per item; with `views` > 1, that many independent distortions of it, stacked.
    An item `(i, seed)` draws its distortions from `seed`: crops then depend on the epoch's seed
    and the image's place in it only, not on which worker, rank or resumed run decodes it."""

    def __init__(self, images: FileImages, train: bool, views: int = 1):
        self.paths, self.styles, self.views = images.paths, images.styles, views
        self.transforms = {style: transform(images.size, train, style) for style in set(self.styles)}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: int | tuple[int, int]) -> torch.Tensor:
        i, seed = item if isinstance(item, tuple) else (item, None)
        try:
            with open_image(self.paths[i]) as image:
                image = image.convert("RGB")
                if seed is None:
                    return self.decode(image, i)
                with torch.random.fork_rng(devices=[]):  # leaves the caller's generator alone
                    torch.manual_seed(seed)
                    return self.decode(image, i)
        except (OSError, ValueError) as error:
            raise ConfigError(f"{self.paths[i]} is not a readable image ({error})") from None

    def decode(self, image: Image.Image, i: int) -> torch.Tensor:
        transform = self.transforms[self.styles[i]]
        if self.views == 1:
            return transform(image)
        return torch.stack([transform(image) for _ in range(self.views)])


class _Batches:
    """A batch sampler whose batches are replaced each epoch, so that one DataLoader (and its
    persistent workers) serves every epoch of a task."""

    def __init__(self):
        self.batches: list[list] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _loader(
    images: FileImages, batches, train: bool, views: int = 1, pin: bool = False, persistent: bool = False
) -> DataLoader:
    """Workers decode `batches` (lists of positions in `images`, or of (position, seed)) in
    order; `pin` when the batches go to a GPU (pinning would wake CUDA up on a CPU run)."""
    return DataLoader(
        _Decode(images, train, views),
        batch_sampler=batches,
        num_workers=images.workers,
        pin_memory=pin,
        persistent_workers=persistent and images.workers > 0,
        generator=torch.Generator(),  # its own base-seed draw; crops come from the item seeds
    )


def _iterate(loader: DataLoader) -> Iterator[torch.Tensor]:
    try:
        yield from loader
    except ConfigError as error:  # raised in a worker: keep only its own message, one line
        raise ConfigError(str(error).strip().splitlines()[-1].split("ConfigError: ", 1)[-1]) from None


def batches(images, batch_size: int, pin: bool = False) -> Iterator[torch.Tensor]:
    """uint8 batches in order: slices of a tensor, or decoded files (resize + centre crop),
    in pinned memory when `pin` (they go to a GPU)."""
    if not isinstance(images, FileImages):
        for i in range(0, len(images), batch_size):
            yield images[i : i + batch_size]
        return
    chunks = [list(range(i, min(i + batch_size, len(images)))) for i in range(0, len(images), batch_size)]
    yield from _iterate(_loader(images, chunks, train=False, pin=pin))


class FileLoader(DeviceLoader):
    """`DeviceLoader` over files: the same batches, decoded and distorted by workers and moved
    to the labels' device; `order` and `start_batch` continue an interrupted epoch. Each rank
    decodes only its own shard. With `views` > 1 (SD) every image is decoded with that many
    independent distortions: batches of shape (n, views, 3, size, size)."""

    def __init__(self, images, labels, batch_size, shuffle, generator=None, views: int = 1):
        super().__init__(images, labels, batch_size, shuffle, generator)
        self.views = views
        self.sampler = _Batches()
        self.loader: DataLoader | None = None  # made at the first epoch; its workers persist

    def shards(self, order: torch.Tensor | None, start_batch: int, ranks: Ranks):
        dev = self.labels.device
        order = self.start_epoch(order)
        seed = int(torch.randint(2**31, (1,), device=dev, generator=self.generator))
        todo = list(spans(len(self.labels), self.batch_size, start_batch, ranks))
        self.sampler.batches = self.decode_list(order.cpu().tolist(), todo, seed)
        if self.loader is None:
            self.loader = _loader(
                self.images, self.sampler, True, self.views, dev.type == "cuda", persistent=True
            )
        for span, images in zip(todo, _iterate(self.loader), strict=True):
            # Labels are picked on the device from the device order: no host copy per batch.
            labels = self.labels[order[span.start : span.start + span.global_size][span.shard]]
            yield span, images.to(dev, non_blocking=True), labels

    @staticmethod
    def decode_list(order: list[int], todo: list, seed: int) -> list[list[tuple[int, int]]]:
        """This rank's batches as (image, distortion seed) pairs: one host copy of the order per
        epoch, plain lists for the workers. The seed follows the image's place in the epoch, so
        every rank decodes its shard exactly as a single process would."""
        batches = []
        for span in todo:
            where = range(span.start, span.start + span.global_size)[span.shard]
            batches.append([(order[p], item_seed(seed, p)) for p in where])
        return batches


def item_seed(epoch_seed: int, position: int) -> int:
    """The distortion seed of the image at `position` of the epoch's order."""
    return (epoch_seed * 1_000_003 + position) % 2**63
