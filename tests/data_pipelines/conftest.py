"""Fixtures shared by the builder tests."""

import fake_benchmarks
import pytest


@pytest.fixture(scope="module")
def no_network():
    """Fail any network access while a test module prepares its fake benchmark."""
    with fake_benchmarks.no_network():
        yield
