"""`ccp.pool_size` below `proxies_per_class` (b < K) and b = 1, as the original allows (METHOD §3.5).

b >= K draws b candidates per class, 1 < b < K draws b·K (so that k-center has at least K to pick
from), b = 1 takes K independent draws without k-center. The config accepts every b >= 1.
"""

import os

import keras
import numpy as np
import pytest

from ccpdml.callbacks import CCPCallback
from ccpdml.config import ConfigError, load_config
from ccpdml.layers import CCPState, ProxyBank
from ccpdml.losses import ContrastiveLoss
from ccpdml.losses.ccp import CCPLoss

C, K, DIM = 5, 3, 4
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Draws:
    """Candidate callable: a fresh random [C, D] per call, all calls kept."""

    def __init__(self):
        self.rng, self.calls = np.random.default_rng(0), []

    def __call__(self):
        self.calls.append(self.rng.normal(size=(C, DIM)).astype("float32"))
        return self.calls[-1]


@pytest.mark.parametrize("pool_size, draws", [(2, 2 * K), (1, K), (K, K), (5, 5)])
def test_reinitialisation_draws_and_picks_from_the_pool(pool_size, draws):
    net = keras.Sequential([keras.Input((8,)), keras.layers.Dense(DIM)])
    inputs = keras.Input((8,))
    bank = ProxyBank(C, proxies_per_class=K)
    state = CCPState(net, bank)
    model = keras.Model(inputs, state(bank(net(inputs))))
    model.compile(optimizer="sgd", loss=CCPLoss(ContrastiveLoss(), state))
    source = Draws()
    ccp = CCPCallback(source, pool_size=pool_size, verbose=0)
    ccp.set_model(model)
    ccp.on_epoch_begin(0)
    assert len(source.calls) == draws
    pool = np.stack(source.calls, axis=1)  # [C, M, D]
    proxies = bank.proxies_by_class().numpy()  # [C, K, D]
    for c in range(C):
        # every proxy is one of its class's candidates, and the K proxies are distinct ones
        picked = [int(np.argmin(np.linalg.norm(pool[c] - p, axis=1))) for p in proxies[c]]
        np.testing.assert_allclose(proxies[c], pool[c][picked], rtol=1e-6)
        assert len(set(picked)) == K
    if pool_size == 1:  # K independent draws, in draw order
        np.testing.assert_allclose(proxies, pool, rtol=1e-6)


def test_config_accepts_every_pool_size_the_original_accepts():
    path = os.path.join(ROOT, "experiments", "digits_ccp_contrastive.yaml")
    for b in (1, 2, 7, 12):
        config = load_config(path, ["loss.ccp.proxies_per_class=8", f"loss.ccp.pool_size={b}"])
        assert (config.loss.ccp.pool_size, config.loss.ccp.proxies_per_class) == (b, 8)
    with pytest.raises(ConfigError, match="pool_size"):
        load_config(path, ["loss.ccp.pool_size=0"])
