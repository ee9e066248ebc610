"""The classic Keras-tutorial CIFAR-10 CNN (keras/examples/cifar10_cnn.py), in PyTorch.

    Conv(32) Conv(32) MaxPool Dropout(.25)
    Conv(64) Conv(64) MaxPool Dropout(.25)
    Flatten Dense(512) Dropout(.5) Dense(classes) [softmax]

Like Keras' `input_shape`, the input size fixes the size of the first dense layer.

Like the tutorial, the second conv of each block has no padding ("valid"). The softmax is folded
into the loss (cross-entropy on logits is categorical cross-entropy on softmax outputs, but
numerically stable); `predict` applies it.
"""

from torch import nn

from cifar_cnn.models.registry import ModelConfig, register_model


@register_model(
    ModelConfig(
        name="keras_cnn",
        description="Keras-tutorial CNN: 2x(conv-conv-pool-dropout) 32/64 filters, dense 512, 1.25M params",
        default_recipe="keras_cnn",
        cam_layer="9",  # the last conv's ReLU, 13x13 at 32 px, before the pooling
    )
)
def keras_cnn(num_classes: int = 10, input_size: int = 32) -> nn.Module:
    side = ((input_size - 2) // 2 - 2) // 2  # after conv-valid-pool twice: 6 at 32 px, 14 at 64 px
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3), nn.ReLU(),
        nn.MaxPool2d(2), nn.Dropout(0.25),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 3), nn.ReLU(),
        nn.MaxPool2d(2), nn.Dropout(0.25),
        nn.Flatten(),
        nn.Linear(64 * side * side, 512), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(512, num_classes),
    )  # fmt: skip
