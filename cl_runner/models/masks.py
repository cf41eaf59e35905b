"""DER's channel masks (Yan, Xie, He, CVPR 2021, section 3.3), on the groups of a `ChannelPlan`.

    m_l = sigmoid(s * e_l)

with one learnable e per channel, s annealed within each epoch by the method (near 0 at the
first batch: soft masks; s_max at the last and at test time: near-binary), and the
gradient of e compensated for the annealing as in HAT (Serra et al. 2018, eq. 6-7):

    g'_l = s_max * sigmoid'(e_l) / (s * sigmoid'(s * e_l)) * g_l

so every e learns at the same pace whatever s is: as fast as a mask of slope s_max around
e = 0, since the gradient of the loss with respect to a mask is small (one channel of many).
The sparsity loss is the share of conv weights the masks keep, each layer weighted by its
size (kernel area K_l x in x out channels):

    L_S = sum_l K_l ||m_{l-1}||_1 ||m_l||_1 / sum_l K_l c_{l-1} c_l
"""

import torch
from torch import nn

from cl_runner.models.channels import ChannelPlan

COSH_LIMIT = 50.0  # cosh(s*e) overflows float32 beyond ~89: the compensation saturates here instead
EMBEDDING_LIMIT = 6.0  # |e| beyond this changes nothing at s_max (HAT clamps the same way)


class ChannelMasks(nn.Module):
    def __init__(self, plan: ChannelPlan, s_max: float = 400.0, init: float = 1.0, compensate: bool = True):
        super().__init__()
        self.plan, self.s_max, self.compensate = plan, s_max, compensate
        self.embeddings = nn.ParameterList(nn.Parameter(torch.full((n,), init)) for n in plan.sizes)
        # A tensor, not a float: under torch.compile a new s per batch must not recompile.
        self.register_buffer("scale", torch.tensor(s_max), persistent=False)
        self.binary = False  # masks are exactly 0/1 (e > 0): what pruning keeps
        self.handles = []
        for e in self.embeddings:
            e.register_hook(self._compensation(e))

    def _compensation(self, e: nn.Parameter):  # g'_l above
        def hook(grad: torch.Tensor) -> torch.Tensor:
            if not self.compensate:
                return grad
            s = self.scale.to(grad.dtype)
            se = (s * e.detach()).clamp(-COSH_LIMIT, COSH_LIMIT)
            # sigmoid'(x) = 1 / (2 + 2 cosh x), so g'/g = s_max (cosh(se) + 1) / (s (cosh(e) + 1))
            return grad * self.s_max * (torch.cosh(se) + 1) / (s * (torch.cosh(e.detach()) + 1))

        return hook

    def set_scale(self, s: float) -> None:
        self.scale.fill_(s)

    def mask(self, group: int) -> torch.Tensor:
        e = self.embeddings[group]
        if self.binary:
            return torch.zeros_like(e).index_fill_(0, self._kept(e), 1.0)
        return torch.sigmoid((self.scale if self.training else self.s_max) * e)

    def values(self) -> list[torch.Tensor]:
        return [self.mask(group) for group in range(len(self.embeddings))]

    @staticmethod
    def _kept(e: torch.Tensor) -> torch.Tensor:
        """Channels with e > 0; a group with none keeps its strongest one, so no layer vanishes."""
        idx = (e.detach() > 0).nonzero().squeeze(1)
        return idx if len(idx) else e.detach().argmax().reshape(1)

    def keep(self) -> list[torch.Tensor]:
        """Indices of the channels each group keeps after binarisation."""
        return [self._kept(e) for e in self.embeddings]

    def sparsity(self) -> torch.Tensor:
        m = self.values()
        used, total = 0, 0
        for link in self.plan.convs:
            k = link.conv.kernel_size[0] * link.conv.kernel_size[1]
            c_in = link.conv.in_channels
            kept_in = m[link.reads].sum() if link.reads is not None else c_in
            used = used + k * kept_in * m[link.writes].sum()
            total += k * c_in * link.conv.out_channels
        return used / total

    def clamp_(self) -> None:
        with torch.no_grad():
            for e in self.embeddings:
                e.clamp_(-EMBEDDING_LIMIT, EMBEDDING_LIMIT)

    # -- hooks on the extractor ----------------------------------------------------------------
    def attach(self) -> None:
        for module, group in self.plan.sites:
            self.handles.append(module.register_forward_hook(self._site_hook(group)))

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def _site_hook(self, group: int):
        def hook(module, inputs, output):
            m = self.mask(group)
            return output * m.to(output.dtype).view(1, -1, 1, 1)

        return hook
