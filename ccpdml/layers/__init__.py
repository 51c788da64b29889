"""Layers of ccpdml: ball normalisation, the proxy bank and the cross-batch memory."""

from ccpdml.layers.ball_normalization import BallNormalization, ball_normalize
from ccpdml.layers.cross_batch_memory import CrossBatchMemory
from ccpdml.layers.proxy_bank import ProxyBank

__all__ = ["BallNormalization", "CrossBatchMemory", "ProxyBank", "ball_normalize"]
