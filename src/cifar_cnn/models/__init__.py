"""Model registry: `create_model(name)`, `list_models()`, and each model's default config."""

from cifar_cnn.models.registry import accepts, create_model, get_model_config, list_models, register_model, summary

# Importing the architecture modules registers their models.
from cifar_cnn.models import airbench, keras_cnn  # noqa: F401  isort: skip

__all__ = ["accepts", "create_model", "get_model_config", "list_models", "register_model", "summary"]
