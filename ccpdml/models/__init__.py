"""Backbones, the embedding head and the BN-Inception converter."""

from ccpdml.models.backbones import BACKBONES, build_backbone, build_embedding_model
from ccpdml.models.bn_inception import BN_INCEPTION_BLOCKS, bn_inception
from ccpdml.models.convert_bninception import (
    convert_bninception,
    convert_main,
    expected_torch_shapes,
    load_checkpoint,
    load_state_dict_into,
)
from ccpdml.models.embedding_head import POOLINGS, EmbeddingHead
from ccpdml.models.freeze import freeze_batchnorm
from ccpdml.models.small_cnn import small_cnn

__all__ = [
    "BACKBONES",
    "BN_INCEPTION_BLOCKS",
    "POOLINGS",
    "EmbeddingHead",
    "bn_inception",
    "build_backbone",
    "build_embedding_model",
    "convert_bninception",
    "convert_main",
    "expected_torch_shapes",
    "freeze_batchnorm",
    "load_checkpoint",
    "load_state_dict_into",
    "small_cnn",
]
