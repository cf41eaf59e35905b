import torch

from cl_runner.data.loader import Augment, DeviceLoader, random_crop, random_flip


def test_random_crop_is_a_window_of_the_padded_image():
    images = torch.randint(0, 256, (16, 3, 6, 6), dtype=torch.uint8)
    out = random_crop(images, 2, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(16):
        windows = [padded[i, :, y : y + 6, x : x + 6] for y in range(5) for x in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    assert not all(torch.equal(out[i], images[i]) for i in range(16))  # some were shifted


def test_random_flip_mirrors_about_half():
    images = torch.arange(2 * 4).view(1, 1, 2, 4).repeat(200, 1, 1, 1).to(torch.uint8)
    out = random_flip(images, torch.Generator().manual_seed(0))
    flipped = (out == images.flip(3)).flatten(1).all(1)
    kept = (out == images).flatten(1).all(1)
    assert (flipped | kept).all()
    assert 60 < int(flipped.sum()) < 140


def test_normalize():
    aug = Augment(mean=[0.5], std=[0.25])
    out = aug.normalize(torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1))
    assert torch.allclose(out.flatten(), torch.tensor([-2.0, 2.0]))


def test_augment_without_distortion_equals_normalize():
    aug = Augment(mean=[0.0], std=[1.0], crop_padding=0, flip=False)
    images = torch.randint(0, 256, (4, 1, 5, 5), dtype=torch.uint8)
    assert torch.equal(aug(images, torch.Generator()), aug.normalize(images))


def test_loader_visits_every_sample_once_per_epoch():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    labels = torch.arange(10)
    loader = DeviceLoader(
        images, labels, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    assert len(loader) == 3
    seen = torch.cat([y for _, y in loader])
    assert sorted(seen.tolist()) == list(range(10))
    assert seen.tolist() != list(range(10))
    for x, y in loader:
        assert torch.equal(x.view(-1).long(), y)
