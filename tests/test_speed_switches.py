"""train.amp, train.channels_last and train.compile: each does what it says, and training with
it on reaches the same weights as without (bf16 autocast within its precision)."""

import logging
from contextlib import contextmanager

import pytest
import torch

from cl_runner.compiled import compiled
from cl_runner.runner import PhaseClock
from cl_runner.train import build_runner, run

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
    runner.learn(runner.benchmark.tasks[0])
    return runner


def test_channels_last_feeds_nhwc_and_learns_the_same_weights(tmp_path):
    formats = []

    def spy(batch, model):
        x = batch.clean()  # drawing a view here would shift the random distortions
        formats.append(x.is_contiguous(memory_format=torch.channels_last) and x.shape[2] > 1)

    nhwc = train_one_task(tmp_path / "nhwc", "train.channels_last=true", spy=spy)
    assert formats and all(formats)
    assert nhwc.model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    # Same weights, same batch: NHWC gives the NCHW loss and gradients up to float rounding. (Whole
    # runs are not compared: this tiny float32 network turns 3e-8 into 4e-2 within seven steps.)
    model = nhwc.model.train()
    train = nhwc.benchmark.train
    x, y = nhwc.benchmark.augment.normalize(train.images[:64]), train.labels[:64]

    def loss_and_grads(memory_format):
        model.to(memory_format=memory_format).zero_grad()
        loss = torch.nn.functional.cross_entropy(
            model(x.contiguous(memory_format=memory_format))["logits"], y
        )
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()])

    loss_nhwc, grads_nhwc = loss_and_grads(torch.channels_last)
    loss_nchw, grads_nchw = loss_and_grads(torch.contiguous_format)
    assert loss_nhwc == pytest.approx(loss_nchw, abs=1e-5)
    assert torch.allclose(grads_nhwc, grads_nchw, atol=1e-5)


def test_only_evaluation_reads_nhwc_where_that_is_faster(tmp_path, monkeypatch):
    """`eval_channels_last`: evaluation (and NME's class means) read NHWC; training,
    recalibration and herding keep training's layout, so the run's weights and exemplars are
    the NCHW run's, bit for bit, and its accuracies agree."""
    phases, seen = [], []
    clock_call = PhaseClock.__call__

    @contextmanager
    def tracked(clock, phase):
        phases.append(phase)
        with clock_call(clock, phase):
            yield

    monkeypatch.setattr(PhaseClock, "__call__", tracked)

    def record(model, args):
        seen.append((phases[-1], args[0].is_contiguous(memory_format=torch.channels_last)))

    switches = ("memory.size=20", "train.precise_bn=true")
    runners = {}
    for nhwc in (False, True):
        runner = build_runner(make_cfg(*BASE, *switches), tmp_path / str(nhwc))
        runner.settings.eval_channels_last = nhwc
        if nhwc:
            runner.model.register_forward_pre_hook(record)
        runner.learn(runner.benchmark.tasks[0])
        runners[nhwc] = runner
    layouts = {phase: {cl for p, cl in seen if p == phase} for phase in phases}
    assert layouts == {"train": {False}, "recalibrate": {False}, "memory": {False}, "after_task": set(),
                       "evaluate": {True}, "checkpoint": set(), "log": set()}  # fmt: skip
    nchw, nhwc = runners[False], runners[True]
    for key, value in nchw.model.state_dict().items():
        assert torch.equal(value, nhwc.model.state_dict()[key]), key
    assert torch.equal(nchw.memory.indices(), nhwc.memory.indices())
    step_nchw, step_nhwc = nchw.results.steps[0], nhwc.results.steps[0]
    assert step_nhwc["seen_acc"] == pytest.approx(step_nchw["seen_acc"], abs=2.0)
    assert step_nhwc["seen_acc_nme"] == pytest.approx(step_nchw["seen_acc_nme"], abs=2.0)


def test_amp_runs_convolutions_in_bfloat16_and_stays_close(tmp_path):
    dtypes = []
    amp = build_runner(make_cfg(*BASE, "train.amp=true", "train.epochs=10"), tmp_path / "amp")
    hook = amp.model.backbone.conv1.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    amp.learn(amp.benchmark.tasks[0])
    hook.remove()
    assert dtypes and dtypes[0] == torch.bfloat16  # the training forward runs under autocast
    assert all(v.dtype == torch.float32 for v in amp.model.state_dict().values() if v.is_floating_point())
    plain = train_one_task(tmp_path / "plain", "train.epochs=10")
    assert amp.results.steps[0]["seen_acc"] > 40  # 10 classes: it learnt
    assert abs(amp.results.steps[0]["seen_acc"] - plain.results.steps[0]["seen_acc"]) <= 15

    # One batch, same weights: the bf16 loss and gradients match float32 to bf16's precision.
    model, test = amp.model.train(), amp.benchmark.test
    x, y = amp.benchmark.augment.normalize(test.images[:64]), test.labels[:64]

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
    compiled_models = []  # what ran each batch's forward pass
    runner = train_one_task(
        tmp_path, "train.compile=true", spy=lambda batch, model: compiled_models.append(batch.network)
    )
    assert compiled_models and all(type(m).__name__ == "OptimizedModule" for m in compiled_models)
    assert runner.results.finished

    # Same weights, same batch (the training batch size: no recompilation): same loss and gradients.
    compiled, eager = compiled_models[0], runner.model.train()
    x = runner.benchmark.augment.normalize(runner.benchmark.train.images[:32])
    y = runner.benchmark.train.labels[:32]

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
    # Whole-vector comparison: inductor's fused BatchNorm kernels round differently (1.5e-3 of
    # the norm on this CPU, on 2x2 feature maps), and an element-wise relative tolerance is
    # meaningless for gradient entries near zero. A wrong graph differs by O(1).
    assert (grads_c - grads_e).norm() <= 1e-2 * grads_e.norm()
    assert torch.nn.functional.cosine_similarity(grads_c, grads_e, dim=0) > 0.9999


@pytest.fixture
def eager_compile(monkeypatch):
    """torch.compile with dynamo's eager backend: the same tracing, guards and recompile limit,
    without the minutes of code generation."""
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: real(model, backend="eager", **kwargs))


class DynamoWarnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def dynamo_warnings():
    handler, logger = DynamoWarnings(), logging.getLogger("torch._dynamo")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def test_mas_finds_its_importance_by_name_through_the_compiled_model(tmp_path, eager_compile):
    """MAS looks parameters up by name: it gets the model itself, whose names are its own (the
    compiled module's start with `_orig_mod.`, which matched nothing and crashed at task 1);
    only the batches run the compiled graph."""
    runner = build_runner(make_cfg(*BASE, "method=mas", "steps=2", "train.compile=true"), tmp_path)
    logged = []
    epoch_end = runner.logger.epoch_end
    runner.logger.epoch_end = lambda task, epoch, stats: logged.append(stats) or epoch_end(task, epoch, stats)
    runner.learn(runner.benchmark.tasks[0])
    runner.learn(runner.benchmark.tasks[1])
    assert "mas" not in logged[0] and logged[-1]["mas"] > 0  # the penalty is computed at task 1


@pytest.mark.slow  # five DER tasks traced by dynamo: about 40 s
def test_a_long_compiled_run_stays_compiled(tmp_path, eager_compile, dynamo_warnings):
    """Each task brings a new extractor and classifier: kept across tasks, their recompiles
    reach dynamo's limit and it falls back to eager (it did here, at the limit of 2 and 5 tasks)."""
    overrides = ["method=der", "method.prune=false", "steps=5", "memory.size=20", "method.balanced_epochs=1"]
    with torch._dynamo.config.patch(recompile_limit=2):
        results = run(make_cfg(*BASE, *overrides, "train.compile=true"), tmp_path)
    assert results.finished
    assert not [m for m in dynamo_warnings if "hit config." in m]


def test_a_task_that_falls_back_to_eager_is_named(eager_compile, caplog):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    with (
        torch._dynamo.config.patch(recompile_limit=1),
        caplog.at_level(logging.WARNING, logger="cl_runner"),
        compiled(model, task=4) as m,
    ):
        m.train()
        m(torch.randn(4, 3))
        m.eval()
        m(torch.randn(4, 3))  # a second graph for the same code: over the limit of 1
    assert any("train.compile: task 4 ran partly eager" in r.getMessage() for r in caplog.records)
