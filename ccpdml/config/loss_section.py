"""The `loss:` section of an experiment config: loss name and parameters, CCP or XBM wrapper.

Frozen dataclasses like the rest of `ccpdml.config.schema`; the loss parameters are checked by
constructing the loss (METHOD §2, §3.1, §7).
"""

import inspect
from dataclasses import dataclass, field

from ccpdml.config.base import ConfigError, Section, check, choice, positive
from ccpdml.losses import LOSSES, PROXY_LOSSES

# "xbm" wraps a base loss and is selected by the `loss.xbm` section, not by `loss.name`.
LOSS_NAMES = tuple(name for name in LOSSES if name != "xbm")


@dataclass(frozen=True)
class CCPConfig(Section):
    """Chance-constrained proxies (METHOD §3.1, §7)."""

    proxies_per_class: int = 8
    pool_size: int = 12
    regularization: float = 2e-4
    decay: float = 1.0
    in_batch_weight: float = 0.1
    proxy_weight: float = 1.0
    patience: int = 3
    lagged_monitor: bool = True
    random_init: bool = False

    def __post_init__(self):
        # Any pool_size >= 1 is valid, as in the original (METHOD §3.5): b >= K draws b candidates
        # per class, 1 < b < K draws b·K, b = 1 takes K random draws without k-center.
        positive(self, "proxies_per_class", "pool_size", "patience")
        for name in ("regularization", "decay", "in_batch_weight", "proxy_weight"):
            check(getattr(self, name) >= 0, f"'{name}' must be >= 0, got {getattr(self, name)}.")


@dataclass(frozen=True)
class XBMConfig(Section):
    """Cross-batch memory (METHOD §2.8)."""

    batches_in_memory: int
    start_at: int = 1000
    memory_weight: float = 1.0
    pair_weight: float = 1.0

    def __post_init__(self):
        positive(self, "batches_in_memory")
        check(self.start_at >= 0, f"'start_at' must be >= 0, got {self.start_at}.")


@dataclass(frozen=True)
class LossConfig(Section):
    """Loss name and constructor parameters, proxy settings, optional CCP or XBM wrapper."""

    name: str
    params: dict = field(default_factory=dict)
    proxies_per_class: int = 1
    proxy_lr_multiplier: float = 1.0
    ccp: CCPConfig | None = None
    xbm: XBMConfig | None = None

    def __post_init__(self):
        choice(self, "name", LOSS_NAMES)
        positive(self, "proxies_per_class", "proxy_lr_multiplier")
        check(
            self.ccp is None or self.xbm is None,
            "'ccp' and 'xbm' cannot both be set; set one of them to null.",
        )
        if self.name in PROXY_LOSSES:
            check(
                self.ccp is None and self.xbm is None,
                f"'{self.name}' is a proxy loss: CCP and XBM wrap pair-based losses only "
                f"({', '.join(n for n in LOSS_NAMES if n not in PROXY_LOSSES)}).",
            )
        _check_loss_params(self.name, self.params)
        centers = self.params.get("centers_per_class")
        if self.name == "soft_triple" and centers is not None:
            check(
                centers == self.proxies_per_class,
                f"soft_triple: params.centers_per_class ({centers}) must equal "
                f"proxies_per_class ({self.proxies_per_class}), the size of the proxy bank.",
            )


def _check_loss_params(name, params):
    """`params` must be constructor arguments of loss `name` with values it accepts."""
    cls = LOSSES[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    accepted -= {"proxy_bank", "name", "reduction", "dtype", "cross_replica_pairs"}
    unknown = sorted(set(params) - accepted)
    check(
        not unknown,
        f"'params': unknown key(s) {', '.join(map(repr, unknown))} for loss {name!r}; valid "
        f"keys: {', '.join(sorted(accepted))}.",
    )
    try:
        cls(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"'params' {params} are not valid for loss {name!r}: {exc}") from None
