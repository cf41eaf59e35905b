"""Exemplar memory, owned by the runner so that any method can rehearse.

It stores indices into the (device-resident) training set, per class, in selection order, so
that shrinking a class's share under a fixed total keeps the best-ranked exemplars (iCaRL).
"""

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from cl_runner import rng
from cl_runner.data.images import ImageSet
from cl_runner.distributed import SINGLE, Ranks


def herding(features: torch.Tensor, m: int) -> torch.Tensor:
    """iCaRL herding (Rebuffi et al. 2017, Alg. 4) on L2-normalised features.

    Step k picks the sample that brings the mean of the k chosen features closest to the class
    mean; a sample is chosen at most once. Returns the positions in choice order.
    """
    f = F.normalize(features.float(), dim=1)
    mu = f.mean(0)
    chosen: list[int] = []
    running = torch.zeros_like(mu)
    available = torch.ones(len(f), dtype=torch.bool, device=f.device)
    for k in range(1, min(m, len(f)) + 1):
        distance = (mu - (running + f) / k).norm(dim=1)
        distance[~available] = float("inf")
        i = int(distance.argmin())
        chosen.append(i)
        available[i] = False
        running += f[i]
    return torch.tensor(chosen, dtype=torch.long, device=f.device)


def welling_herding(features: torch.Tensor, m: int, max_steps: int = 1000) -> torch.Tensor:
    """Herding as iCaRL's and DER's official code run it (Welling 2009): on L2-normalised
    features, w starts at the class mean mu; each step picks argmax_i <w, f_i> and sets
    w <- w + mu - f_i. A sample picked again is not added again; after `max_steps` steps the
    selection stops where it is (the official cap). Returns the positions in choice order."""
    f = F.normalize(features.float(), dim=1)
    mu = f.mean(0)
    w = mu.clone()
    chosen: list[int] = []
    target = min(m, len(f))
    for _ in range(max_steps):
        if len(chosen) == target:
            break
        i = int((f @ w).argmax())
        if i not in chosen:
            chosen.append(i)
        w += mu - f[i]
    return torch.tensor(chosen, dtype=torch.long, device=f.device)


SELECTORS = {"herding": herding, "welling": welling_herding}


def split_rows(batches: Iterator[torch.Tensor], sizes: list[int]) -> Iterator[torch.Tensor]:
    """The rows of a stream of batches, regrouped into consecutive groups of `sizes` rows."""
    held: list[torch.Tensor] = []
    count = 0
    for size in sizes:
        while count < size:
            batch = next(batches)
            held.append(batch)
            count += len(batch)
        rows = torch.cat(held)
        yield rows[:size]
        held, count = [rows[size:]], count - size


class ExemplarMemory:
    def __init__(
        self, size: int = 0, per_class: int | None = None, selection: str = "herding", seed: int = 0
    ):
        self.size, self.per_class, self.selection = size, per_class, selection
        self.generator = torch.Generator().manual_seed(seed)
        self.by_class: dict[int, torch.Tensor] = {}  # label -> train indices, best first

    @property
    def enabled(self) -> bool:
        return bool(self.size) or bool(self.per_class)

    def quota(self, num_seen_classes: int) -> int:
        """Exemplars per class: fixed per class, or the fixed total shared equally."""
        if self.per_class:
            return self.per_class
        return self.size // max(num_seen_classes, 1)

    def indices(self) -> torch.Tensor:
        if not self.by_class:
            return torch.empty(0, dtype=torch.long)
        return torch.cat([self.by_class[c] for c in sorted(self.by_class)])

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_class.values())

    def exemplars(self, train: ImageSet) -> ImageSet:
        """The stored exemplars' images and labels in `train` (class-balanced after every update)."""
        return train.subset(self.indices().to(train.labels.device))

    def update(self, train: ImageSet, new_labels: range, embed, ranks: Ranks = SINGLE) -> None:
        """Shrink old classes to the new quota, then select exemplars of `new_labels`.

        `embed(images)` yields the current network's features (eval mode, undistorted) batch by
        batch. Herding takes the new classes' images in one pass, class after class, and keeps
        only the class at hand's features: memory stays one class deep (an ImageNet DER task's
        features would otherwise take gigabytes). With several processes each rank herds its
        share of the classes and they exchange the results.
        """
        if not self.enabled:
            return
        m = self.quota(new_labels.stop)
        for c in self.by_class:
            self.by_class[c] = self.by_class[c][:m]
        labels = train.labels
        select = SELECTORS.get(self.selection)
        if select is None:  # random: cheap, the same draws on every rank
            for c in new_labels:
                members = (labels == c).nonzero().squeeze(1)
                perm = torch.randperm(len(members), generator=self.generator)
                self.by_class[c] = members[perm.to(members.device)[:m]]
            return
        mine = [c for i, c in enumerate(new_labels) if i % ranks.world == ranks.rank]
        members = [(labels == c).nonzero().squeeze(1) for c in mine]
        found = {}
        if members:
            stream = embed(train.images[torch.cat(members)])
            per_class = split_rows(stream, [len(p) for p in members])
            for c, positions, features in zip(mine, members, per_class, strict=True):
                found[c] = positions[select(features, m)]
        if ranks.active:
            for part in ranks.gather({c: v.cpu() for c, v in found.items()}):
                found.update({c: v.to(labels.device) for c, v in part.items()})
        self.by_class.update({c: found[c] for c in new_labels})

    def state_dict(self) -> dict:
        return {
            "by_class": {c: v.cpu() for c, v in self.by_class.items()},
            "generator": rng.pack(self.generator.get_state()),
        }

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        self.by_class = {int(c): v.to(device) for c, v in state["by_class"].items()}
        self.generator.set_state(rng.unpack(state["generator"]))
