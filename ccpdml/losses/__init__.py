"""Metric-learning losses of ccpdml and the registry that resolves their config names."""

from ccpdml import registration as _registration
from ccpdml.losses.base import MetricLoss
from ccpdml.losses.ccp import CCPLoss
from ccpdml.losses.ccp_terms import CCPTermMean, loss_term_metrics
from ccpdml.losses.contrastive import ContrastiveLoss
from ccpdml.losses.multi_similarity import MultiSimilarityLoss
from ccpdml.losses.proxy_anchor import ProxyAnchorLoss
from ccpdml.losses.proxy_nca import ProxyNCALoss
from ccpdml.losses.similarity_contrastive import SimilarityContrastiveLoss
from ccpdml.losses.soft_triple import SoftTripleLoss
from ccpdml.losses.triplet import TripletLoss
from ccpdml.losses.wrapper import WrapperLoss
from ccpdml.losses.xbm import XBMLoss

LOSSES = {
    "contrastive": ContrastiveLoss,
    "similarity_contrastive": SimilarityContrastiveLoss,
    "triplet": TripletLoss,
    "multi_similarity": MultiSimilarityLoss,
    "proxy_anchor": ProxyAnchorLoss,
    "proxy_nca": ProxyNCALoss,
    "soft_triple": SoftTripleLoss,
    "xbm": XBMLoss,
}

# Losses that own class proxies (a ProxyBank) themselves (METHOD §2.5-§2.7).
PROXY_LOSSES = ("proxy_anchor", "proxy_nca", "soft_triple")


def get(name, **params):
    """Instantiate the loss registered as `name` with `params` (names: the keys of `LOSSES`)."""
    if name not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}. Valid names: {', '.join(sorted(LOSSES))}.")
    return LOSSES[name](**params)


__all__ = [
    "LOSSES",
    "PROXY_LOSSES",
    "CCPLoss",
    "CCPTermMean",
    "ContrastiveLoss",
    "MetricLoss",
    "MultiSimilarityLoss",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "SimilarityContrastiveLoss",
    "SoftTripleLoss",
    "TripletLoss",
    "WrapperLoss",
    "XBMLoss",
    "get",
    "loss_term_metrics",
]

# Last: the classes of the other ccpdml packages are registered with Keras too.
_registration.install(finishing=__name__)
