"""pytest configuration of the package's tests: the `gpu` marker (tests that need a CUDA GPU)."""


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU and torch (skipped without one)")
