"""Test-time augmentation in `predict_logits`: the selective variant the speed recipes time."""

import pytest
import torch

from cifar_cnn.evaluate import predict_logits
from cifar_cnn.models import create_model
from cifar_cnn.recipes import get_recipe


@pytest.fixture(scope="module")
def model_and_inputs():
    torch.manual_seed(0)
    model = create_model("fast").eval()
    with torch.no_grad():
        model.head.weight.mul_(40)  # spread the confidences of a fresh net over (0.1, 1)
    inputs = torch.randn(64, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    return model, inputs


def test_selective_tta_gives_the_views_only_to_unsure_images(model_and_inputs):
    model, x = model_and_inputs
    plain = predict_logits(model, x, tta=0, batch_size=16)
    full = predict_logits(model, x, tta=2, batch_size=16)
    confidence = plain.softmax(1).amax(1)
    below = float(confidence.median())  # about half the images are unsure
    unsure = confidence < below
    assert 0 < int(unsure.sum()) < len(x)
    selective = predict_logits(model, x, tta=2, batch_size=16, tta_below=below)
    torch.testing.assert_close(selective[unsure], full[unsure], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(selective[~unsure], plain[~unsure], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(full[~unsure], plain[~unsure], atol=1e-4)  # TTA does change them


def test_selective_tta_at_the_extremes(model_and_inputs):
    model, x = model_and_inputs
    full = predict_logits(model, x, tta=2)
    torch.testing.assert_close(predict_logits(model, x, tta=2, tta_below=0.9999999), full, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(predict_logits(model, x, tta=2, tta_below=1e-9), predict_logits(model, x), rtol=1e-4,
                               atol=1e-5)  # fmt: skip


def test_recipe_checks_tta_below():
    assert get_recipe("fast").tta_below == 0.6
    assert get_recipe("fast_progressive").tta_below == 0.6  # derived from fast
    with pytest.raises(ValueError, match="tta_below"):
        get_recipe("fast").override(tta_below=1.5)
