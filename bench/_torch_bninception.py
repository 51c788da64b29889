"""PyTorch BN-Inception (the layer list of Cadene's `pretrainedmodels.bninception`) for the bench.

Written from ccpdml/models/bn_inception.py (`BN_INCEPTION_BLOCKS`, the same module names): every
convolution has a bias and is followed by BatchNorm2d (ε = 1e-5, affine) and ReLU; the stem is
conv1_7x7_s2 (7×7/2, pad 3) → 3×3/2 ceil-mode max pool → conv2_3x3_reduce (1×1) → conv2_3x3 (3×3,
pad 1) → 3×3/2 ceil-mode max pool; blocks 3a-5b have a 1×1 branch, a 3×3 branch, a double-3×3
branch and a pool branch (3×3/1 average with zero padding counted, or max, + 1×1 projection;
in 3c and 4e a 3×3/2 ceil-mode max pool and stride-2 3×3 convolutions). Random weights. Only
imported by the PyTorch worker of bench_torch_step.py.
"""

import ast
import os

import torch
from torch import nn


def _blocks_table():
    """`BN_INCEPTION_BLOCKS` read from ccpdml/models/bn_inception.py without importing Keras."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ccpdml",
                        "models", "bn_inception.py")  # fmt: skip
    with open(path) as fh:
        tree = ast.parse(fh.read())
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and getattr(node.targets[0], "id", "") == "BN_INCEPTION_BLOCKS"
        ):
            return ast.literal_eval(node.value)
    raise RuntimeError(f"BN_INCEPTION_BLOCKS not found in {path}")


BN_INCEPTION_BLOCKS = _blocks_table()


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin, cout, kernel, stride=1):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2),
            nn.BatchNorm2d(cout, eps=1e-5),
            nn.ReLU(inplace=True),
        )


class InceptionBlock(nn.Module):
    def __init__(self, cin, n1x1, n3r, n3, nd3r, nd3, pool, nproj):
        super().__init__()
        stride = 2 if pool == "max_s2" else 1
        self.branch_1x1 = ConvBNReLU(cin, n1x1, 1) if n1x1 else None
        self.branch_3x3 = nn.Sequential(ConvBNReLU(cin, n3r, 1), ConvBNReLU(n3r, n3, 3, stride))
        self.branch_double = nn.Sequential(
            ConvBNReLU(cin, nd3r, 1), ConvBNReLU(nd3r, nd3, 3), ConvBNReLU(nd3, nd3, 3, stride)
        )
        if pool == "max_s2":
            self.branch_pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        else:
            pooling = (
                nn.AvgPool2d(3, stride=1, padding=1, ceil_mode=True, count_include_pad=True)
                if pool == "avg"
                else nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)
            )
            self.branch_pool = nn.Sequential(pooling, ConvBNReLU(cin, nproj, 1))

    def forward(self, x):
        outs = [self.branch_1x1(x)] if self.branch_1x1 is not None else []
        outs += [self.branch_3x3(x), self.branch_double(x), self.branch_pool(x)]
        return torch.cat(outs, dim=1)


class TorchEmbedding(nn.Module):
    """BN-Inception features → global average pool → linear D (no bias), as build_embedding_model."""

    def __init__(self, embedding_dim=128):
        super().__init__()
        self.stem = nn.Sequential(
            ConvBNReLU(3, 64, 7, 2),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            ConvBNReLU(64, 64, 1),
            ConvBNReLU(64, 192, 3),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
        )
        self.blocks = nn.Sequential(*(InceptionBlock(*cfg) for cfg in BN_INCEPTION_BLOCKS.values()))
        self.head = nn.Linear(1024, embedding_dim, bias=False)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def contrastive_loss(emb, labels, neg_margin=0.5):
    """In-batch contrastive loss on ball-normalised embeddings (ccpdml's `contrastive`)."""
    norm = emb.norm(dim=1, keepdim=True)
    emb = torch.where(norm > 1, emb / norm.clamp_min(1e-12), emb)
    sq = (emb * emb).sum(1)
    dist = (sq[:, None] + sq[None, :] - 2 * emb @ emb.T).clamp_min(0).add(1e-16).sqrt()
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool)
    pos = dist * (same & ~eye)
    neg = (neg_margin - dist) * ~same
    pos_active, neg_active = (pos > 0).float(), (neg > 0).float()
    return (pos * pos_active).sum() / (pos_active.sum() + 1e-16) + (neg * neg_active).sum() / (
        neg_active.sum() + 1e-16
    )
