"""The DMLAdam configuration shared by the optimizer tests (fused path and public-API fallback)."""

from ccpdml.optimizers import DMLAdam

LR, WD = 1e-2, 1e-2


def dml_adam(variables, clip_value=0.3):
    """Decay on all but variables[1], global-norm clip 5, value clip, ×3 LR on variables[0]."""
    return DMLAdam(
        LR,
        weight_decay_l2=WD,
        clip_global_norm=5.0,
        clip_value=clip_value,
        lr_multipliers=[(variables[0], 3.0)],
        exclude_from_decay=[variables[1]],
    )
