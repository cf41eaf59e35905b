"""The LwF/MAS protocol: a sequence of data sets, one task each; ImageNet-pretrained weights from
a state dict in torchvision's layout; the pretrained data set as task 0 with the weights' own
classifier as its head; the baselines that freeze shared layers."""

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import alexnet as tv_alexnet
from torchvision.models import resnet18 as tv_resnet18

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from synthetic_sets import write_cub200

from cl_runner.data.build import load_sequence
from cl_runner.data.files import FileImages, batches
from cl_runner.data.images import ImageSet, Splits
from cl_runner.data.sequence import SequenceSet, pooled_statistics, resized
from cl_runner.errors import ConfigError
from cl_runner.models.alexnet import alexnet
from cl_runner.models.resnet18 import resnet18
from cl_runner.train import run

from .conftest import make_cfg
from .test_files_data import write_imagenet

CPU = ["device=cpu", "logger=local", "train.epochs=1"]
EMBEDDED = ["sequence=[mnist5k,digits]", "backbone=resnet20", *CPU]


def test_two_embedded_sets_are_two_tasks_with_their_own_heads(tmp_path):
    run(make_cfg("method=finetune", *EMBEDDED), tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    steps = metrics["steps"]
    assert [s["classes"] for s in steps] == [list(range(10)), list(range(10, 20))]
    assert [s["train_images"] for s in steps] == [4000, 1438]  # mnist5k's 80%, digits' 80%
    assert metrics["config"]["dataset"]["num_classes"] == 10  # the recipe comes from the first set
    assert list(metrics["config"]["sequence_sets"]) == ["mnist5k", "digits"]
    task_il = metrics["accuracy_matrix"]["task_il"]
    assert task_il[1][0] is not None and task_il[0][1] is None


def test_in_memory_sets_are_resized_to_the_largest_and_normalised_together():
    small = torch.arange(4, dtype=torch.uint8).view(1, 1, 2, 2).repeat(3, 1, 1, 1)
    assert resized(small, 4).shape == (3, 1, 4, 4)
    flat = torch.full((2, 1, 8, 8), 200, dtype=torch.uint8)
    assert torch.equal(resized(flat, 28), torch.full((2, 1, 28, 28), 200, dtype=torch.uint8))
    # pooled statistics by hand: 3 images at mean .2/std .1 and 1 image at mean .6/std .3
    a = SequenceSet("a", Splits(ImageSet(torch.zeros(3, 1, 2, 2), torch.zeros(3)), None), 1, [0.2], [0.1])
    b = SequenceSet("b", Splits(ImageSet(torch.zeros(1, 1, 2, 2), torch.zeros(1)), None), 1, [0.6], [0.3])
    mean, std = pooled_statistics([a, b], 1)
    assert mean == pytest.approx([0.3])  # (3*.2 + .6) / 4
    assert std == pytest.approx([((3 * (0.01 + 0.04) + (0.09 + 0.36)) / 4 - 0.09) ** 0.5])


def test_steps_with_a_sequence_is_one_clear_error(tmp_path):
    from .conftest import cl_run

    done = cl_run("sequence=[mnist5k,digits]", "steps=2", "device=cpu", "logger=local",
                  f"hydra.run.dir={tmp_path}", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "cl-run: error: sequence sets one task per data set: "
        "drop steps/init_classes (they split one data set)"
    )
    with pytest.raises(ConfigError, match="no data set 'cub'; choose from"):
        run(make_cfg("sequence=[mnist5k,cub]", *CPU), tmp_path / "b")
    with pytest.raises(ConfigError, match="init_classes and class_order do not apply"):
        run(make_cfg("sequence=[mnist5k,digits]", "init_classes=5", *CPU), tmp_path / "c")


def test_a_file_set_and_an_in_memory_set_are_decoded_by_the_same_workers(tmp_path):
    write_cub200(tmp_path / "cub")
    root = f"+sets.cub200.root={tmp_path / 'cub'}"
    cfg = make_cfg("sequence=[cub200,digits]", root, "+sets.cub200.size=32",
                   "+sets.cub200.workers=0", "+sets.cub200.num_classes=3", *CPU)  # fmt: skip
    from .conftest import spec_of

    splits, tasks, form = load_sequence(spec_of(cfg).sets, None, rgb=False)
    assert isinstance(splits.train.images, FileImages) and (form.channels, form.size) == (3, 32)
    assert [(t.name, t.offset, t.size) for t in tasks] == [("cub200", 0, 3), ("digits", 3, 10)]
    assert splits.test.labels.min() == 0 and splits.test.labels.max() == 12
    digits = splits.test.images[splits.test.labels >= 3]
    decoded = next(batches(digits, 5))
    assert decoded.shape == (5, 3, 32, 32) and decoded.dtype == torch.uint8
    assert torch.equal(decoded[:, 0], decoded[:, 1])  # grey digits, the same in every channel
    flips = {(s.crop, s.flip) for s in splits.train.images.styles}
    assert flips == {("crop", True), ("crop", False)}  # birds mirrored, digits not


# -- pretrained weights ------------------------------------------------------------------------
def test_torchvision_alexnet_state_dict_loads_and_gives_the_same_outputs(tmp_path):
    torch.manual_seed(0)
    reference = tv_alexnet(weights=None).eval()
    torch.save(reference.state_dict(), tmp_path / "alexnet.pth")
    ours = alexnet(3, 224, weights=str(tmp_path / "alexnet.pth")).eval()
    head = nn.Linear(4096, 1000)
    head.load_state_dict(ours.pretrained.classifier)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(head(ours(x)), reference(x), atol=1e-5)


def test_torchvision_resnet18_state_dict_loads_and_gives_the_same_outputs(tmp_path):
    torch.manual_seed(0)
    reference = tv_resnet18(weights=None)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that a mis-mapped one shows
        for m in reference.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    reference.eval()
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, tmp_path / "r.pth"
    )
    ours = resnet18(3, 224, stem="imagenet", weights=str(tmp_path / "r.pth")).eval()
    head = nn.Linear(512, 1000)
    head.load_state_dict(ours.pretrained.classifier)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(head(ours(x)), reference(x), atol=1e-5)


def test_weights_that_cannot_be_had_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="backbone.weights=.*nothing.pth: no such file"):
        alexnet(3, 224, weights=str(tmp_path / "nothing.pth"))
    torch.save(tv_resnet18(weights=None).state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(ConfigError, match="does not fit torchvision's alexnet"):
        alexnet(3, 224, weights=str(tmp_path / "resnet.pth"))
    with pytest.raises(ConfigError, match="needs backbone.stem=imagenet"):
        resnet18(3, 224, stem="cifar", weights="imagenet")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(
        ConfigError, match=r"ImageNet weights for alexnet are not in .*hub/checkpoints/alexnet-owt"
    ):
        alexnet(3, 224, weights="imagenet")


def test_imagenet_as_task_0_keeps_the_weights_classifier_and_is_not_trained(tmp_path):
    """The LwF paper's old task: head 0 is the pretrained fc8, evaluated on the validation
    images; LwF then distils it while learning the birds."""
    torch.manual_seed(0)
    reference = tv_alexnet(weights=None, num_classes=4).eval()
    torch.save(reference.state_dict(), tmp_path / "alexnet4.pth")
    write_imagenet(tmp_path / "imagenet")
    write_cub200(tmp_path / "cub")
    small = [f"+sets.{name}.{key}={value}" for name in ("imagenet", "cub200")
             for key, value in (("size", 64), ("workers", 0))]  # fmt: skip
    cfg = make_cfg(
        "method=lwf", "sequence=[imagenet,cub200]", "backbone=alexnet", "backbone.weights_data=imagenet",
        f"backbone.weights={tmp_path / 'alexnet4.pth'}", f"+sets.imagenet.root={tmp_path / 'imagenet'}",
        f"+sets.cub200.root={tmp_path / 'cub'}", "+sets.imagenet.num_classes=4", "+sets.cub200.num_classes=3",
        *small, "train.batch_size=4", "train.eval_batch_size=8", *CPU,
    )  # fmt: skip
    results = run(cfg, tmp_path / "run")
    assert results.steps[0]["classes"] == [0, 1, 2, 3]
    # task 0's accuracy is torchvision's network's own on the validation images
    from cl_runner.data.imagenet import imagenet

    val = imagenet(str(tmp_path / "imagenet"), 64, workers=0).test
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        images = torch.cat(list(batches(val.images, 8))).float() / 255
        expected = (reference((images - mean) / std).argmax(1) == val.labels).float().mean() * 100
    assert results.matrices["task_il"][0][0] == pytest.approx(float(expected), abs=1e-4)
    assert len(results.matrices["task_il"][1]) == 2  # then the birds, LwF distilling head 0


# -- the baselines that freeze shared layers ----------------------------------------------------
@pytest.mark.parametrize(
    "method, moving",
    [
        ("feature_extraction", set()),
        ("finetune_fc", {"fc.2.weight", "fc.5.weight"}),
    ],  # the small AlexNet's two fc layers
)
def test_after_the_first_task_only_heads_and_the_allowed_layers_move(tmp_path, method, moving):
    from cl_runner.train import build_runner

    cfg = make_cfg(f"method={method}", "sequence=[synthetic,digits]", "backbone=alexnet", *CPU)
    runner = build_runner(cfg, tmp_path)
    first, second = runner.benchmark.tasks
    runner.learn(first)
    before = {k: v.clone() for k, v in runner.model.backbone.state_dict().items()}
    head0 = runner.model.heads[0].state_dict()
    head0 = {k: v.clone() for k, v in head0.items()}
    runner.learn(second)
    after = runner.model.backbone.state_dict()
    moved = {k for k in before if "weight" in k and not torch.equal(before[k], after[k])}
    assert moved == moving
    assert all(torch.equal(v, runner.model.heads[0].state_dict()[k]) for k, v in head0.items())
    if not moving:  # nothing task 0's outputs depend on has moved
        assert runner.results.matrices["task_il"][1][0] == runner.results.matrices["task_il"][0][0]


def test_feature_extraction_heads_have_the_papers_hidden_layer_and_survive_a_resume(tmp_path):
    from cl_runner.train import build_runner

    cfg = make_cfg("method=feature_extraction", "method.hidden=16", "dataset=synthetic", "steps=2", *CPU,
                   "backbone=resnet20")  # fmt: skip
    runner = build_runner(cfg, tmp_path)
    runner.run()
    assert [type(h[1]).__name__ for h in runner.model.heads] == ["ReLU", "ReLU"]
    assert runner.model.heads[1][0].out_features == 16
    cfg = make_cfg("method=feature_extraction", "method.hidden=16", "dataset=synthetic", "steps=2", *CPU,
                   "backbone=resnet20", "resume=true")  # fmt: skip
    resumed = build_runner(cfg, tmp_path)
    assert resumed.model.frozen and not any(p.requires_grad for p in resumed.model.backbone.parameters())
    resumed.model.train()
    assert not any(m.training for m in resumed.model.backbone.modules() if m is not resumed.model.backbone)
    assert resumed.model.heads.training


def test_grey_data_with_imagenet_weights_is_replicated_to_three_channels_as_in_a_sequence(tmp_path):
    """One rule everywhere: pretrained weights read 3 channels and ImageNet's normalisation, so a
    grey data set learnt alone is replicated as a sequence's grey sets are."""
    from cl_runner.train import build_runner

    torch.save(tv_resnet18(weights=None).state_dict(), tmp_path / "resnet.pth")
    overrides = ["dataset=digits", "backbone=resnet18", "backbone.stem=imagenet",
                 f"backbone.weights={tmp_path / 'resnet.pth'}", "train.epochs=1", "steps=2",
                 "device=cpu", "logger=local"]  # fmt: skip
    runner = build_runner(make_cfg(*overrides), tmp_path / "run")
    images = runner.benchmark.train.images
    assert images.shape[1:] == (3, 8, 8) and torch.equal(images[:, 0], images[:, 2])
    assert runner.benchmark.augment.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    results = runner.run()
    assert results.finished
