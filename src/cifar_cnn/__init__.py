"""cifar-cnn: train, evaluate and use convolutional image classifiers on CIFAR-10.

import cifar_cnn
(x_train, y_train), (x_test, y_test) = cifar_cnn.load_cifar10()
result = cifar_cnn.train("fast", out_dir="runs/fast")
model = cifar_cnn.load("runs/fast")          # or cifar_cnn.load() for the bundled weights
model.predict("photo.jpg")
"""

__version__ = "0.1.0"

from cifar_cnn.data import CLASS_NAMES, load_cifar10
from cifar_cnn.errors import CheckpointError, CifarCnnError, DataError, ImageError
from cifar_cnn.evaluate import compute_metrics
from cifar_cnn.models import create_model, list_models, summary
from cifar_cnn.predict import Classifier, Prediction, load, load_weights
from cifar_cnn.recipes import RECIPES, Recipe, get_recipe
from cifar_cnn.train import TrainResult, train

__all__ = [
    "CLASS_NAMES", "RECIPES", "CheckpointError", "CifarCnnError", "Classifier", "DataError", "ImageError",
    "Prediction", "Recipe", "TrainResult", "compute_metrics", "create_model", "get_recipe", "list_models",
    "load", "load_cifar10", "load_weights", "summary", "train",
]  # fmt: skip
