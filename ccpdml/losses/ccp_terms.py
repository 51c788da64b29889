"""Running means of the unweighted CCP terms, as Keras metrics (per-term logs, NaN guard)."""

import keras

CCP_TERMS = ("in_batch", "proxy", "proximal")


@keras.saving.register_keras_serializable(package="ccpdml")
class CCPTermMean(keras.metrics.Mean):
    """Running mean of one unweighted CCP term, `ccp_loss.term(term, y, ŷ)` (that term only).

    Args:
        ccp_loss: the `CCPLoss` whose term is logged (not serialised: pass it again).
        term: "in_batch", "proxy" or "proximal" (default "in_batch").
        **kwargs: `keras.metrics.Mean` arguments (default name "ccp_<term>").
    """

    def __init__(self, ccp_loss=None, term="in_batch", **kwargs):
        kwargs.setdefault("name", f"ccp_{term}")
        super().__init__(**kwargs)
        self.ccp_loss = ccp_loss
        self.term = term

    def update_state(self, y_true, y_pred, sample_weight=None):
        value = self.ccp_loss.term(self.term, y_true, y_pred)
        return super().update_state(keras.ops.stop_gradient(value))

    def get_config(self):
        return {**super().get_config(), "term": self.term}


def loss_term_metrics(ccp_loss) -> list:
    """Metrics logging the CCP terms as `ccp_in_batch`, `ccp_proxy`, `ccp_proximal`."""
    return [CCPTermMean(ccp_loss, term) for term in CCP_TERMS]
