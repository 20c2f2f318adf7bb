import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_toy(tmp_path_factory):
    """A small toy world (fast to generate) for tests that need real files."""
    from teachclip_lite.toy import ToyConfig, generate

    cfg = ToyConfig(seed=3, n_train=12, n_val=4, n_test=6, workers=1)
    return generate(tmp_path_factory.mktemp("toy"), cfg, progress=False), cfg
