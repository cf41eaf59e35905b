import torch

from cl_runner.data.images import ImageSet
from cl_runner.data.memory import ExemplarMemory, herding, split_rows, welling_herding

# Five 2-D features; herding normalises them first:
#   a (3,4)->(.6,.8)  b (1,0)  c (0,2)->(0,1)  d (-1,1)->(-.707,.707)  e (2,1)->(.894,.447)
# class mean mu = (.3575, .5909).
# Step 1, distance |mu - f|: a .320, b .873, c .543, d 1.071, e .556          -> a
# Step 2, |mu - (a + f)/2| for f != a: b .482, c .314, d .442, e .391          -> c
FEATURES = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0], [-1.0, 1.0], [2.0, 1.0]])


def test_herding_picks_documented_exemplars():
    assert herding(FEATURES, 2).tolist() == [0, 2]


def test_welling_herding_as_the_official_code_runs_it():
    # w = mu; scores <w, f>: a .687 b .358 c .591 d .165 e .584 -> a; w = 2 mu - a = (.115, .382)
    # scores: a .374 b .115 c .382 d .189 e .274 -> c; w += mu - c = (.4725, -.0273)
    # scores: a .262 b .4725 c -.027 d -.353 e .410 -> b; then e before d (closest-mean: d before e)
    assert welling_herding(FEATURES, 3).tolist() == [0, 2, 1]
    assert welling_herding(FEATURES, 5).tolist() == [0, 2, 1, 4, 3]
    assert herding(FEATURES, 5).tolist() == [0, 2, 1, 3, 4]
    assert welling_herding(FEATURES, 5, max_steps=2).tolist() == [0, 2]  # the official step cap


def test_herding_never_picks_twice_and_caps_at_class_size():
    chosen = herding(FEATURES, 10).tolist()
    assert sorted(chosen) == [0, 1, 2, 3, 4]


def _train_set(per_class: int, classes: int) -> ImageSet:
    labels = torch.arange(classes).repeat_interleave(per_class)
    # Image value = index, so features identify samples; embed() below reads them back.
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1)
    return ImageSet(images, labels)


def _features(images):
    v = images.float().view(-1, 1)
    return torch.cat([torch.cos(v), torch.sin(v)], 1)  # distinct unit vectors per sample


def _embed(images):
    """Features batch by batch, as the runner's embed yields them (batches of 3 here)."""
    features = _features(images)
    for i in range(0, len(features), 3):
        yield features[i : i + 3]


def test_split_rows_regroups_a_stream_of_batches():
    stream = iter([torch.arange(0, 3), torch.arange(3, 7), torch.arange(7, 8), torch.arange(8, 12)])
    groups = [g.tolist() for g in split_rows(stream, [2, 5, 0, 5])]
    assert groups == [[0, 1], [2, 3, 4, 5, 6], [], [7, 8, 9, 10, 11]]


def test_herding_class_by_class_from_the_stream_picks_what_whole_features_would():
    train = _train_set(per_class=10, classes=3)
    memory = ExemplarMemory(size=12, selection="herding")
    memory.update(train, range(0, 3), _embed)  # 4 each, features arriving in batches of 3
    for c in range(3):
        members = (train.labels == c).nonzero().squeeze(1)
        assert memory.by_class[c].tolist() == members[herding(_features(train.images[members]), 4)].tolist()


def test_fixed_total_shrinks_old_classes_keeping_best_ranked():
    train = _train_set(per_class=10, classes=4)
    memory = ExemplarMemory(size=8, selection="herding")
    memory.update(train, range(0, 2), _embed)  # 8 slots / 2 classes = 4 each
    first = {c: v.clone() for c, v in memory.by_class.items()}
    assert [len(v) for v in first.values()] == [4, 4]
    memory.update(train, range(2, 4), _embed)  # 8 / 4 = 2 each
    assert len(memory) == 8
    for c in (0, 1):
        assert memory.by_class[c].tolist() == first[c][:2].tolist()
    assert all((train.labels[memory.by_class[c]] == c).all() for c in range(4))


def test_per_class_memory_and_random_selection():
    train = _train_set(per_class=10, classes=4)
    memory = ExemplarMemory(per_class=3, selection="random", seed=1)
    memory.update(train, range(0, 2), _embed)
    memory.update(train, range(2, 4), _embed)
    assert [len(memory.by_class[c]) for c in range(4)] == [3, 3, 3, 3]
    idx = memory.indices()
    assert len(set(idx.tolist())) == 12
    assert train.labels[idx].tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3


def test_disabled_memory_stays_empty():
    memory = ExemplarMemory(size=0)
    memory.update(_train_set(5, 2), range(0, 2), _embed)
    assert len(memory) == 0 and len(memory.indices()) == 0


def test_state_round_trip():
    train = _train_set(per_class=10, classes=2)
    memory = ExemplarMemory(size=6, selection="random", seed=3)
    memory.update(train, range(0, 2), _embed)
    restored = ExemplarMemory(size=6, selection="random")
    restored.load_state_dict(memory.state_dict())
    assert restored.indices().tolist() == memory.indices().tolist()
    assert torch.equal(restored.generator.get_state(), memory.generator.get_state())
