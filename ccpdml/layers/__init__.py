"""Layers of ccpdml: ball normalisation, the proxy bank, the CCP state and the cross-batch memory."""

from ccpdml import registration as _registration
from ccpdml.layers.ball_normalization import BallNormalization, ball_normalize
from ccpdml.layers.ccp_state import CCPState
from ccpdml.layers.cross_batch_memory import CrossBatchMemory
from ccpdml.layers.proxy_bank import ProxyBank

__all__ = ["BallNormalization", "CCPState", "CrossBatchMemory", "ProxyBank", "ball_normalize"]

# Last: the classes of the other ccpdml packages are registered with Keras too.
_registration.install(finishing=__name__)
