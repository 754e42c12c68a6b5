"""Agent communication graphs: :class:`AgentGraph` and fixed presets."""

from gcache.graph.agent_graph import DECISIONS, AgentGraph, UnrolledNode, topological_order
from gcache.graph.presets import PRESETS, TEMPORAL_PATTERNS, preset_graph

__all__ = [
    "AgentGraph",
    "DECISIONS",
    "PRESETS",
    "TEMPORAL_PATTERNS",
    "UnrolledNode",
    "preset_graph",
    "topological_order",
]
