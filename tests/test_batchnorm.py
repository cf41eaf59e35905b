import torch
from torch import nn

from cl_runner.batchnorm import recalibrate


def test_statistics_become_the_exact_average_over_the_data():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3))
    x = torch.randn(16, 1, 4, 4) * 3 + 1
    recalibrate(net.eval(), [x])  # one batch: running stats = that batch's mean and unbiased var
    y = net[0](x).transpose(0, 1).reshape(3, -1)
    assert torch.allclose(net[1].running_mean, y.mean(1), atol=1e-5)
    assert torch.allclose(net[1].running_var, y.var(1, unbiased=True), atol=1e-4)
    assert net[1].momentum == 0.1 and not net.training  # settings restored


def test_frozen_batchnorm_is_untouched():
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.BatchNorm2d(2))
    for p in net[2].parameters():
        p.requires_grad_(False)
    frozen = {k: v.clone() for k, v in net[2].state_dict().items()}
    recalibrate(net, [torch.randn(8, 1, 3, 3) + 5])
    assert all(torch.equal(v, frozen[k]) for k, v in net[2].state_dict().items())
    assert not torch.equal(net[1].running_mean, torch.zeros(2))


def test_weights_do_not_change():
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    before = [p.clone() for p in net.parameters()]
    recalibrate(net, [torch.randn(4, 1, 2, 2)])
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
