"""Shared fixtures. Peer libraries (captum, pytorch-grad-cam, timm) are test-only."""

from __future__ import annotations

import pytest
import torch

from salience.compat import import_optional


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def default_model():
    """The bundled EfficientNet-Lite0 with its ImageNet weights."""
    import salience as sl

    return sl.load_model("efficientnet_lite0")


def require(name: str):
    """Import an optional library for a test, skipping the test if it is not installed."""
    try:
        return import_optional(name)
    except Exception as err:  # noqa: BLE001 - any import failure means: skip
        pytest.skip(f"{name} unavailable: {err}")
