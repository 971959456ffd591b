import pytest
import torch

from dxai.data.synthetic import FAMILIES, SyntheticDataset
from dxai.errors import DXAIError
from dxai.normalization import Normalization


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("size,channels", [(16, 3), (32, 1), (64, 3), (256, 3)])
def test_image_is_background_plus_class_part(family, size, channels):
    classes = 2 if family == "noise" else 3
    data = SyntheticDataset(family, classes, size=6, img_size=size, channels=channels, seed=3)
    for index in range(len(data)):
        background, class_part, label = data.generate(index)
        item = data[index]
        assert item["image"].shape == (channels, size, size)
        assert torch.equal(item["image"], torch.from_numpy(background + class_part).float())
        assert 0 <= item["image"].min() and item["image"].max() <= 1
        assert 0 <= label < classes
        if family != "noise" or label == 1:
            assert class_part.any(), "only the clean class of the noise family has no class part"


@pytest.mark.parametrize("family", FAMILIES)
def test_samples_are_a_function_of_seed_and_index(family):
    a = SyntheticDataset(family, 2, size=5, img_size=32, seed=7)
    b = SyntheticDataset(family, 2, size=5, img_size=32, seed=7)
    c = SyntheticDataset(family, 2, size=5, img_size=32, seed=8)
    for index in (4, 0, 2):
        assert torch.equal(a[index]["image"], b[index]["image"])
    assert not torch.equal(a[0]["image"], c[0]["image"])


def test_normalised_layers_still_add_up():
    normalization = Normalization.symmetric(3)
    data = SyntheticDataset("shapes", 3, size=4, img_size=32, normalization=normalization)
    for item in (data[i] for i in range(4)):
        assert torch.allclose(item["background"] + item["class_part"], item["image"], atol=1e-5)
        assert item["image"].min() >= -1 and item["image"].max() <= 1


def test_every_class_appears():
    data = SyntheticDataset("shapes", 3, size=60, img_size=32)
    labels = [data.generate(i)[2] for i in range(60)]
    assert set(labels) == {0, 1, 2}


def test_background_does_not_depend_on_the_label():
    data = SyntheticDataset("shapes", 3, size=300, img_size=32)
    means = {k: [] for k in range(3)}
    for i in range(300):
        background, _, label = data.generate(i)
        means[label].append(background.mean())
    averages = [sum(v) / len(v) for v in means.values()]
    assert max(averages) - min(averages) < 0.03


@pytest.mark.parametrize("kwargs,match", [
    (dict(family="waves"), "unknown synthetic family"),
    (dict(num_classes=9), "supports 2 to"),
    (dict(img_size=8), "16 to 256"),
    (dict(channels=2), "1 or 3 channels"),
])
def test_bad_settings_are_clear_errors(kwargs, match):
    with pytest.raises(DXAIError, match=match):
        SyntheticDataset(**kwargs)
