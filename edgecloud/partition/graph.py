"""Trace a model with torch.fx, find its cut points and split it into head and tail.

A cut point is a position in the traced graph's topological order where exactly one tensor
flows from the nodes before it to the nodes after it. Inside a residual block the skip
connection keeps a second tensor alive, so no cut exists there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.fx as fx

from edgecloud.errors import CutPointError, EdgecloudError


@dataclass(frozen=True)
class CutPoint:
    """A place where the network can be cut; ``shape`` is the feature shape without batch."""

    name: str
    index: int  # position along the network, 0 nearest the input
    shape: Tuple[int, ...]

    @property
    def elements(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count


class _Tracer(fx.Tracer):
    """fx tracer that keeps timm's untraceable layers (e.g. SAME-padded convs) as leaves."""

    def __init__(self) -> None:
        from timm.layers import _fx as timm_fx

        super().__init__(autowrap_functions=tuple(timm_fx.get_notrace_functions()))
        self._leaf_types = tuple(timm_fx.get_notrace_modules())

    def is_leaf_module(self, module: torch.nn.Module, qualified_name: str) -> bool:
        return isinstance(module, self._leaf_types) or super().is_leaf_module(
            module, qualified_name
        )


def trace(module: torch.nn.Module) -> fx.GraphModule:
    """Symbolically trace ``module`` into an fx GraphModule without its Identity layers."""
    try:
        graph = _Tracer().trace(module)
    except Exception as exc:  # fx raises TraceError, TypeError, ... for dynamic control flow
        raise EdgecloudError(f"cannot trace {type(module).__name__} with torch.fx: {exc}") from exc
    for node in list(graph.nodes):
        if node.op == "call_module" and isinstance(
            module.get_submodule(str(node.target)), torch.nn.Identity
        ):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    return fx.GraphModule(module, graph, module.__class__.__name__)


def _scope(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack")
    if stack:
        last = list(stack.values())[-1]
        return last[0] if isinstance(last, tuple) else str(last)
    return ""


def _prefixes(scope: str) -> List[str]:
    parts = scope.split(".") if scope else []
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@dataclass(frozen=True)
class _Candidate:
    name: str
    position: int  # index of the node whose output crosses the cut


def _candidates(graph: fx.Graph) -> List[_Candidate]:
    nodes = list(graph.nodes)
    position = {node: i for i, node in enumerate(nodes)}
    last_use = {node: max((position[user] for user in node.users), default=-1) for node in nodes}
    last_in_scope: Dict[str, int] = {}
    for i, node in enumerate(nodes):
        for prefix in _prefixes(_scope(node)):
            last_in_scope[prefix] = i

    found: List[_Candidate] = []
    live: set = set()
    for i, node in enumerate(nodes):
        if node.op == "output":
            break
        live = {n for n in live if last_use[n] > i}
        if node.op != "get_attr" and last_use[node] > i:
            live.add(node)
        if live != {node} or node.op == "placeholder":
            continue
        if nodes[last_use[node]].op == "output":
            continue  # the model's own output
        ending = [p for p in _prefixes(_scope(node)) if last_in_scope[p] == i]
        found.append(_Candidate(ending[0] if ending else _operation_name(node), i))
    names = [c.name for c in found]
    return [
        _Candidate(f"{c.name}_{names[:k].count(c.name) + 1}", c.position)
        if names.count(c.name) > 1 and names[:k].count(c.name) > 0
        else c
        for k, c in enumerate(found)
    ]


def _operation_name(node: fx.Node) -> str:
    """``scope.op`` for a functional node that ends no module (e.g. ``layer1.0.add``)."""
    target = node.target
    op = target if isinstance(target, str) else getattr(target, "__name__", node.name)
    scope = _scope(node)
    return f"{scope}.{op}" if scope else str(op)


class Partitioner:
    """Cut points and head/tail construction for one traced model."""

    def __init__(self, module: torch.nn.Module, input_shape: Sequence[int]) -> None:
        self.module = module
        self.graph_module = trace(module)
        self.input_shape = tuple(input_shape)
        self._candidates = {c.name: c for c in _candidates(self.graph_module.graph)}
        self._shapes = self._feature_shapes()

    def _feature_shapes(self) -> Dict[str, Tuple[int, ...]]:
        from torch.fx.passes.shape_prop import ShapeProp

        example = torch.zeros((1, *self.input_shape))
        with torch.no_grad():
            ShapeProp(self.graph_module).propagate(example)
        nodes = list(self.graph_module.graph.nodes)
        shapes = {}
        for name, candidate in self._candidates.items():
            meta = nodes[candidate.position].meta.get("tensor_meta")
            shapes[name] = tuple(meta.shape[1:]) if hasattr(meta, "shape") else ()
        return shapes

    def cut_points(self) -> List[CutPoint]:
        return [
            CutPoint(name, index, self._shapes[name])
            for index, name in enumerate(self._candidates)
            if self._shapes[name]  # only tensor-valued cuts
        ]

    def get(self, name: str) -> CutPoint:
        for cut in self.cut_points():
            if cut.name == name:
                return cut
        names = ", ".join(c.name for c in self.cut_points())
        raise CutPointError(
            f"no cut point {name!r} in {type(self.module).__name__}; valid: {names}"
        )

    def split(self, name: str) -> Tuple[fx.GraphModule, fx.GraphModule]:
        """Head (input -> feature) and tail (feature -> output) for the cut ``name``."""
        self.get(name)
        position = self._candidates[name].position
        nodes = list(self.graph_module.graph.nodes)
        cut_node = nodes[position]

        head_graph = fx.Graph()
        env: Dict[fx.Node, fx.Node] = {}
        for node in nodes[: position + 1]:
            env[node] = head_graph.node_copy(node, lambda n: env[n])
        head_graph.output(env[cut_node])

        tail_graph = fx.Graph()
        tail_env: Dict[fx.Node, fx.Node] = {cut_node: tail_graph.placeholder("feature")}

        def lookup(node: fx.Node) -> fx.Node:
            if node not in tail_env:  # a constant (get_attr) defined before the cut
                if node.op != "get_attr":
                    raise EdgecloudError(f"cut {name!r} is not a single-tensor cut ({node.name})")
                tail_env[node] = tail_graph.node_copy(node, lookup)
            return tail_env[node]

        for node in nodes[position + 1 :]:
            if node.op == "output":
                tail_graph.output(lookup(node.args[0]))
            else:
                tail_env[node] = tail_graph.node_copy(node, lookup)

        head = fx.GraphModule(self.graph_module, head_graph, "Head")
        tail = fx.GraphModule(self.graph_module, tail_graph, "Tail")
        return head.eval(), tail.eval()


def _partitioner(model) -> Partitioner:
    """Partitioner for a ModelSpec, cached on it (tracing costs a few hundred ms)."""
    cached: Optional[Partitioner] = getattr(model, "_partitioner", None)
    if cached is None or cached.module is not model.module:
        cached = Partitioner(model.module, model.input_shape)
        model._partitioner = cached
    return cached


def cut_points(model) -> List[CutPoint]:
    """Every valid cut of a ModelSpec, from input to output."""
    return _partitioner(model).cut_points()


def get_cut(model, name: str) -> CutPoint:
    return _partitioner(model).get(name)


def split(model, cut: str) -> Tuple[fx.GraphModule, fx.GraphModule]:
    """``(head, tail)`` of a ModelSpec at the cut named ``cut``; ``tail(head(x)) == model(x)``."""
    return _partitioner(model).split(cut)


def resolve_cut(model, name: Optional[str]) -> str:
    """``name`` checked against the model's cut points, or the model's default cut if None."""
    return get_cut(model, name or default_cut(model)).name


def default_cut(model) -> str:
    """The model record's default cut (the middle cut point for a model without one)."""
    record = getattr(model, "record", None)
    if record is not None and record.default_cut:
        return record.default_cut
    points = cut_points(model)
    return points[len(points) // 2].name
