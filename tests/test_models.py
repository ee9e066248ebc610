import pytest
import torch

from cifar_cnn.models import create_model, get_model_config, list_models


@pytest.mark.parametrize("name", list_models())
def test_forward_shape_and_config(name):
    model = create_model(name).eval()
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (4, 10)
    assert torch.isfinite(out).all()
    config = get_model_config(name)
    assert config.input_size == (3, 32, 32) and len(config.mean) == 3 and config.default_recipe
    assert model.model_name == name


def test_unknown_model_lists_choices():
    with pytest.raises(ValueError, match="keras_cnn"):
        create_model("resnet9000")


def test_keras_cnn_has_the_tutorial_shape():
    model = create_model("keras_cnn")
    convs = [m for m in model if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64]
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    assert [lin.out_features for lin in linears] == [512, 10]
    assert sum(p.numel() for p in model.parameters()) == 1_250_858  # as Keras' model.summary() reports


def test_whitening_stem_whitens():
    torch.manual_seed(0)
    model = create_model("fast")
    images = torch.randn(256, 3, 32, 32) * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1)
    model.init_whiten(images)
    out = torch.nn.functional.conv2d(images, model.whiten.weight[:12])
    cov = torch.cov(out.permute(1, 0, 2, 3).reshape(12, -1))
    assert torch.allclose(cov, torch.eye(12), atol=0.05)


def test_keras_style_summary():
    from cifar_cnn.models import summary

    text = summary(create_model("keras_cnn"))
    assert "(None, 64, 6, 6)" in text and "Total params: 1,250,858" in text
    assert "Non-trainable params: 0" in text
    fast = summary(create_model("fast"))
    assert "Non-trainable params: 0" not in fast  # the whitening filters and BN scales are fixed


def test_large_is_airbench96_shaped():
    model = create_model("large")
    groups = [m for m in model.modules() if type(m).__name__ == "ConvGroup"]
    assert [g.conv1.out_channels for g in groups] == [128, 384, 512]
    assert all(g.residual and g.conv3.in_channels == g.conv3.out_channels for g in groups)
    # the residual branch: zeroing conv3 makes the group's output its first conv's activation
    g = groups[0].eval()
    x = torch.randn(2, 24, 32, 32)  # the whitening stem's 24 channels
    with torch.no_grad():
        g.conv3.weight.zero_()
        inner = g.activ(g.norm1(g.pool(g.conv1(x))))
        assert torch.allclose(g(x), inner + g.activ(g.norm3(torch.zeros_like(inner))))
