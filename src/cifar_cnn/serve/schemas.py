"""The JSON shapes of the /v1 API and of every error, as Pydantic models: they are the OpenAPI
document (what /docs shows and what the schemathesis fuzz test checks every response against)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    error: str = Field(description="what went wrong, in words; never a stack trace or a server path")
    filename: str | None = Field(None, description="the uploaded file the error is about, when it is about one")


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    model: str


class LabelScore(BaseModel):
    label: str
    score: float


class PredictionBody(BaseModel):
    """`Prediction.to_dict()`: the one shape of a prediction in the CLI, the API and the widget."""

    filename: str | None
    label: str
    score: float
    predictions: list[LabelScore]
    uncertain: bool
    reason: str | None = Field(None, description='why `uncertain`, in words: "looks like none of the N classes" '
                               '(unlike every training image) or "torn between X and Y"; null when certain')  # fmt: skip


class ExplanationBody(PredictionBody):
    """`POST /v1/explain`: the prediction, and where in the picture the model found `target`."""

    target: str = Field(description="the class explained: the predicted one unless `target` was asked for")
    explanation: str = Field(description="PNG data URL: the picture (at most 512 px) with the heatmap over it; "
                             "outside the central square the model sees, greyed")  # fmt: skip


class ModelInfo(BaseModel):
    name: str  # what the model is called: its recipe where that names a variant ("robust"), else architecture
    architecture: str  # the registry network ("fast", "keras_cnn"...) or "custom"
    classes: list[str]
    num_classes: int
    accuracy: float | None
    accuracy_label: str
    input_size: list[int]
    resize: str
    temperature: float
    uncertain_threshold: float


def error_responses(*statuses: int) -> dict:
    """OpenAPI `responses` entries in the error shape for these status codes."""
    return {status: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[status]} for status in statuses}


ERROR_DESCRIPTIONS = {
    400: "the request is malformed",
    401: "an API key is required, or the one sent is not valid (`Authorization: Bearer <key>`)",
    404: "no such model",
    408: "the request's headers or body did not arrive in time",
    413: "too large: the request body, a file, the number of files or an image's pixels",
    415: "a file is not an image in a format the server reads",
    422: "a file is empty or damaged, or a parameter is out of range",
    429: "too many requests from this client: wait for `Retry-After` seconds",
}


def guard_responses(api_key: bool, rate_limited: bool, post: bool) -> dict:
    """The errors the guards may answer with on any protected route (see guards.py)."""
    responses = {}
    if api_key:
        responses |= error_responses(401)
    if rate_limited:
        responses[429] = {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[429],
                          "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}}}  # fmt: skip
    if post:
        responses |= error_responses(408, 413)
    return responses
