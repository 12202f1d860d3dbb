"""Fold inference-mode BatchNorms into the convolutions before them (a serving transform).

``y = act(bn(conv(x)))`` becomes ``y = act(conv'(x))`` with the BatchNorm's running
statistics and affine folded into ``conv'``'s weight and bias
(:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`): one pass over the activations fewer per
layer. ONNX Runtime and TensorRT do this themselves; eager PyTorch does not.
"""

from __future__ import annotations

import copy

import torch.fx as fx
from timm.layers import BatchNormAct2d
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batch_norms(module: fx.GraphModule) -> fx.GraphModule:
    """``module`` with every eval-mode ``BatchNorm2d`` (or timm ``BatchNormAct2d``, whose
    dropout and activation stay) that is the only user of a ``Conv2d``'s output folded into
    that convolution. Other layers are shared with ``module``, which is left as it was."""
    folded = fx.GraphModule(module, copy.deepcopy(module.graph), type(module).__name__)
    modules = dict(folded.named_modules())
    for node in folded.graph.nodes:
        bn = modules.get(node.target) if node.op == "call_module" else None
        if type(bn) not in (nn.BatchNorm2d, BatchNormAct2d) or bn.training:
            continue
        conv_node = node.args[0] if node.args else None
        if not isinstance(conv_node, fx.Node) or conv_node.op != "call_module":
            continue
        conv = modules.get(conv_node.target)
        if not isinstance(conv, nn.Conv2d) or conv.training or len(conv_node.users) != 1:
            continue
        if bn.running_mean is None:  # normalises with batch statistics: nothing to fold
            continue
        _replace(folded, conv_node.target, fuse_conv_bn_eval(conv, bn))
        rest = nn.Sequential(bn.drop, bn.act) if isinstance(bn, BatchNormAct2d) else nn.Identity()
        _replace(folded, node.target, rest)
    folded.recompile()
    return folded


def _replace(module: nn.Module, target: str, new: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, name, new)
