"""train.amp, train.channels_last and train.compile: each does what it says, and training with
it on reaches the same weights as without (bf16 autocast within its precision)."""

import pytest
import torch

from cl_runner.train import build_runner

from .conftest import TINY, make_cfg

BASE = [*TINY, "steps=1", "train.epochs=1", "train.precise_bn=false", "checkpoint.every_epochs=0"]


def train_one_task(tmp_path, *switches: str, spy=None):
    runner = build_runner(make_cfg(*BASE, *switches), tmp_path)
    if spy is not None:
        original = runner.method.training_loss

        def recording(batch, model):
            spy(batch, model)
            return original(batch, model)

        runner.method.training_loss = recording
    runner.learn(runner.tasks[0])
    return runner


def weights(runner) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in runner.model.state_dict().items() if v.is_floating_point()}


def assert_same_weights(a, b, atol: float) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=atol, rtol=atol), (key, (wa[key] - wb[key]).abs().max())


def test_channels_last_feeds_nhwc_and_learns_the_same_weights(tmp_path):
    formats = []

    def spy(batch, model):
        x = batch.clean()  # drawing a view here would shift the random distortions
        formats.append(x.is_contiguous(memory_format=torch.channels_last) and x.shape[2] > 1)

    plain = train_one_task(tmp_path / "plain")
    nhwc = train_one_task(tmp_path / "nhwc", "train.channels_last=true", spy=spy)
    assert formats and all(formats)
    assert nhwc.model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert_same_weights(plain, nhwc, atol=1e-4)


def test_amp_runs_convolutions_in_bfloat16_and_stays_close(tmp_path):
    dtypes = []
    amp = build_runner(make_cfg(*BASE, "train.amp=true", "train.epochs=10"), tmp_path / "amp")
    hook = amp.model.backbone.conv1.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    amp.learn(amp.tasks[0])
    hook.remove()
    assert dtypes and dtypes[0] == torch.bfloat16  # the training forward runs under autocast
    assert all(v.dtype == torch.float32 for v in amp.model.state_dict().values() if v.is_floating_point())
    plain = train_one_task(tmp_path / "plain", "train.epochs=10")
    assert amp.results.steps[0]["seen_acc"] > 40  # 10 classes: it learnt
    assert abs(amp.results.steps[0]["seen_acc"] - plain.results.steps[0]["seen_acc"]) <= 15

    # One batch, same weights: the bf16 loss and gradients match float32 to bf16's precision.
    model, test = amp.model.train(), amp.data.test
    x, y = amp.augment.normalize(test.images[:64]), test.labels[:64]

    def loss_and_grads(enabled: bool):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            loss = torch.nn.functional.cross_entropy(model(x)["logits"].float(), y)
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()])

    loss32, grad32 = loss_and_grads(False)
    loss16, grad16 = loss_and_grads(True)
    assert abs(loss16 - loss32) <= 0.02 * abs(loss32) + 1e-3
    assert torch.nn.functional.cosine_similarity(grad16, grad32, dim=0) > 0.99


@pytest.mark.slow  # compiling the forward and backward takes about a minute on two cores
def test_compile_trains_a_compiled_module_that_computes_what_eager_does(tmp_path):
    compiled_models = []
    runner = train_one_task(tmp_path, "train.compile=true", spy=lambda b, m: compiled_models.append(m))
    assert compiled_models and all(type(m).__name__ == "OptimizedModule" for m in compiled_models)
    assert runner.results.finished

    # Same weights, same batch (the training batch size: no recompilation): same loss and gradients.
    compiled, eager = compiled_models[0], runner.model.train()
    x = runner.augment.normalize(runner.data.train.images[:32])
    y = runner.data.train.labels[:32]

    def loss_and_grads(model):
        eager.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x)["logits"], y)
        loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in eager.parameters()])

    state = {k: v.clone() for k, v in eager.state_dict().items()}
    loss_c, grads_c = loss_and_grads(compiled)
    eager.load_state_dict(state)  # the compiled pass updated BatchNorm statistics: start again
    loss_e, grads_e = loss_and_grads(eager)
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads_c, grads_e, rtol=1e-3, atol=1e-4)
