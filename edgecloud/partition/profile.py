"""Per-cut cost profile: feature size, MACs and parameters on each side, head and tail
latency, and the whole model's latency (what ``edgecloud plan`` needs from each machine)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Set, Tuple

import numpy as np
import torch
import torch.fx as fx
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from edgecloud.partition.graph import CutPoint, _partitioner


@dataclass
class CutProfile:
    """Costs of cutting a model at one point (batch 1)."""

    cut: str
    index: int
    shape: Tuple[int, ...]
    elements: int
    bytes_fp32: int
    bytes_int8: int
    head_macs: int
    tail_macs: int
    head_params: int
    tail_params: int
    head_ms: float
    tail_ms: float

    def as_dict(self) -> Dict[str, object]:
        row = asdict(self)
        row["shape"] = list(self.shape)
        return row


class _MacCounter(fx.Interpreter):
    """Runs the graph once, recording the MACs of every node (FLOPs / 2)."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.macs: Dict[fx.Node, int] = {}

    def run_node(self, node: fx.Node):
        with FlopCounterMode(display=False) as counter:
            result = super().run_node(node)
        self.macs[node] = counter.get_total_flops() // 2
        return result


def _params_used(graph_module: fx.GraphModule, nodes: List[fx.Node]) -> Set[str]:
    names: Set[str] = set()
    for node in nodes:
        if node.op in ("call_module", "get_attr"):
            prefix = str(node.target)
            names.update(
                name
                for name, _ in graph_module.named_parameters()
                if name == prefix or name.startswith(prefix + ".")
            )
    return names


def median_ms(call: Callable[[], object], repeat: int) -> float:
    """Median milliseconds of ``call()`` over ``repeat`` runs after one warm-up run."""
    with torch.inference_mode():
        call()  # warm-up
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            call()
            times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def _median_ms(module: torch.nn.Module, example: torch.Tensor, repeat: int) -> float:
    return median_ms(lambda: module(example), repeat)


def profile_cuts(
    model,
    cuts: Optional[List[CutPoint]] = None,
    repeat: int = 5,
    progress: bool = True,
) -> List[CutProfile]:
    """Profile every cut point of a ModelSpec (or the given subset)."""
    partitioner = _partitioner(model)
    graph_module = partitioner.graph_module
    example = torch.randn(1, *model.input_shape)
    counter = _MacCounter(graph_module)
    with torch.inference_mode():
        counter.run(example)
    nodes = list(graph_module.graph.nodes)
    total_macs = sum(counter.macs.values())
    sizes = dict(graph_module.named_parameters())
    total_params = sum(p.numel() for p in sizes.values())

    profiles = []
    selected = cuts if cuts is not None else partitioner.cut_points()
    for cut in tqdm(selected, desc="profile", disable=not progress, unit="cut"):
        position = partitioner._candidates[cut.name].position
        head_nodes = nodes[: position + 1]
        head_macs = sum(counter.macs.get(n, 0) for n in head_nodes)
        head_params = sum(sizes[n].numel() for n in _params_used(graph_module, head_nodes))
        head, tail = partitioner.split(cut.name)
        with torch.inference_mode():
            feature = head(example)
        profiles.append(
            CutProfile(
                cut=cut.name,
                index=cut.index,
                shape=cut.shape,
                elements=cut.elements,
                bytes_fp32=4 * cut.elements,
                bytes_int8=cut.elements,
                head_macs=head_macs,
                tail_macs=total_macs - head_macs,
                head_params=head_params,
                tail_params=total_params - head_params,
                head_ms=_median_ms(head, example, repeat),
                tail_ms=_median_ms(tail, feature, repeat),
            )
        )
    return profiles


def model_ms(model, repeat: int = 5) -> float:
    """Median latency of the whole model of a ModelSpec (batch 1, after one warm-up run)."""
    return _median_ms(model.module.eval(), torch.randn(1, *model.input_shape), repeat)
