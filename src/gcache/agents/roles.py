"""Agent roles and prompt sets as data.

A :class:`PromptSet` is the per-domain list of roles (name + profile text), the anchor
graph of role connections the topology GNN passes messages over, and the default agent
list. Built-in sets live as YAML next to this module (``prompt_sets/<name>.yaml``); users
can load their own YAML or JSON file with the same fields.

Example YAML::

    domain: math
    roles:
      - name: Math Solver
        profile: Solves the problem step by step ...
      - name: Inspector
        profile: Checks the other agents' work ...
    anchor_edges:
      - [Math Solver, Inspector]
    default_agents: [Math Solver, Inspector]
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml

logger = logging.getLogger(__name__)

__all__ = ["Role", "PromptSet", "load_prompt_set", "list_prompt_sets"]

# A plain data folder inside the ``gcache.agents`` package (shipped as package data).
_PROMPT_SET_DIR = "prompt_sets"
_FIELDS = ("domain", "roles", "anchor_edges", "default_agents")


@dataclass(frozen=True)
class Role:
    """One agent role.

    Args:
        name (str): Role name, unique within a prompt set (e.g. ``"Math Solver"``).
        profile (str): Free-text description of the role. It is what the topology model
            embeds, and what the prompt builders put in the system prompt.

    Raises:
        ValueError: If ``name`` or ``profile`` is empty or not a string.
    """

    name: str
    profile: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"role name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.profile, str) or not self.profile.strip():
            raise ValueError(f"role {self.name!r}: profile must be a non-empty string")


@dataclass(frozen=True)
class PromptSet:
    """The roles of one domain, their anchor graph and the default agent list.

    Args:
        domain (str): Domain label (e.g. ``"math"``, ``"knowledge"``, ``"code"``).
        roles (tuple[Role, ...]): The available roles; names must be unique.
        anchor_edges (tuple[tuple[str, str], ...]): Directed role connections ``(u, v)``
            forming the anchor graph of the topology GNN. No self-loops.
        default_agents (tuple[str, ...]): Role name per agent for the default team;
            a role may appear more than once.

    Raises:
        ValueError: On duplicate role names, anchor edges or agents that name an unknown
            role, self-loops, or an empty role / agent list.

    Example:
        >>> ps = load_prompt_set("gsm8k")
        >>> ps.default_agents
        ('Math Solver', 'Mathematical Analyst', 'Programming Expert', 'Inspector')
        >>> ps.anchor_adjacency(ps.default_agents).shape
        torch.Size([4, 4])
    """

    domain: str
    roles: tuple[Role, ...]
    anchor_edges: tuple[tuple[str, str], ...]
    default_agents: tuple[str, ...]

    def __post_init__(self) -> None:
        # Normalise lists (from YAML/JSON) into tuples so the frozen set is hashable.
        object.__setattr__(self, "roles", tuple(self.roles))
        object.__setattr__(
            self, "anchor_edges", tuple(tuple(e) for e in self.anchor_edges)
        )
        object.__setattr__(self, "default_agents", tuple(self.default_agents))

        if not isinstance(self.domain, str) or not self.domain.strip():
            raise ValueError(f"domain must be a non-empty string, got {self.domain!r}")
        if not self.roles:
            raise ValueError("a prompt set needs at least one role")
        for r in self.roles:
            if not isinstance(r, Role):
                raise ValueError(f"roles must be Role objects, got {type(r).__name__}")
        names = [r.name for r in self.roles]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate role names: {dupes}")
        known = set(names)
        for edge in self.anchor_edges:
            if len(edge) != 2:
                raise ValueError(f"anchor edge {edge!r}: expected a pair (source, target)")
            for end in edge:
                if end not in known:
                    raise ValueError(
                        f"anchor edge {edge!r}: unknown role {end!r}; roles are {names}"
                    )
            if edge[0] == edge[1]:
                raise ValueError(f"anchor edge {edge!r}: self-loop")
        if not self.default_agents:
            raise ValueError("default_agents must name at least one role")
        for i, agent in enumerate(self.default_agents):
            if agent not in known:
                raise ValueError(
                    f"default_agents[{i}]: unknown role {agent!r}; roles are {names}"
                )

    @property
    def role_names(self) -> tuple[str, ...]:
        """Names of all roles, in declaration order."""
        return tuple(r.name for r in self.roles)

    def role(self, name: str) -> Role:
        """Return the role called ``name``.

        Raises:
            KeyError: If no role has that name.
        """
        for r in self.roles:
            if r.name == name:
                return r
        raise KeyError(f"unknown role {name!r}; roles are {list(self.role_names)}")

    def select_agents(self, num_agents: int | None = None) -> tuple[str, ...]:
        """Role name per agent for a team of ``num_agents``.

        Args:
            num_agents (int | None): Team size. ``None`` returns ``default_agents``;
                a smaller number takes its prefix; a larger one cycles through it.
                Default is None.

        Returns:
            tuple[str, ...]: One role name per agent.

        Raises:
            ValueError: If ``num_agents`` < 1.
        """
        if num_agents is None:
            return self.default_agents
        if num_agents < 1:
            raise ValueError(f"num_agents must be >= 1, got {num_agents}")
        k = len(self.default_agents)
        return tuple(self.default_agents[i % k] for i in range(num_agents))

    def profiles(self, agents: Sequence[str]) -> list[str]:
        """Profile text per agent (for embedding)."""
        return [self.role(a).profile for a in agents]

    def anchor_adjacency(self, agents: Sequence[str]) -> torch.Tensor:
        """Anchor adjacency over a team of agents.

        ``adj[u, v]`` is True when ``(agents[u], agents[v])`` is an anchor edge. Agents that
        share a role share its connections; the diagonal is always False.

        Args:
            agents (Sequence[str]): Role name per agent.

        Returns:
            torch.BoolTensor: ``[n, n]`` adjacency.

        Raises:
            KeyError: If an agent names an unknown role.
        """
        for a in agents:
            self.role(a)
        edges = set(self.anchor_edges)
        n = len(agents)
        adj = torch.zeros(n, n, dtype=torch.bool)
        for u in range(n):
            for v in range(n):
                if u != v and (agents[u], agents[v]) in edges:
                    adj[u, v] = True
        return adj

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptSet:
        """Build a prompt set from a mapping with the YAML/JSON fields.

        Raises:
            ValueError: On missing or unknown fields, or any validation error.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"a prompt set must be a mapping, got {type(data).__name__}")
        missing = [f for f in _FIELDS if f not in data]
        if missing:
            raise ValueError(f"prompt set is missing field(s) {missing}")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ValueError(f"prompt set has unknown field(s) {unknown}; expected {list(_FIELDS)}")
        roles = []
        for i, r in enumerate(data["roles"] or ()):
            if not isinstance(r, Mapping) or "name" not in r or "profile" not in r:
                raise ValueError(f"roles[{i}]: expected a mapping with 'name' and 'profile'")
            roles.append(Role(name=r["name"], profile=r["profile"]))
        return cls(
            domain=data["domain"],
            roles=tuple(roles),
            anchor_edges=tuple(tuple(e) for e in (data["anchor_edges"] or ())),
            default_agents=tuple(data["default_agents"] or ()),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-able form, the inverse of :meth:`from_dict`."""
        return {
            "domain": self.domain,
            "roles": [{"name": r.name, "profile": r.profile} for r in self.roles],
            "anchor_edges": [list(e) for e in self.anchor_edges],
            "default_agents": list(self.default_agents),
        }


def list_prompt_sets() -> list[str]:
    """Names of the built-in prompt sets (sorted)."""
    root = resources.files("gcache.agents").joinpath(_PROMPT_SET_DIR)
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_prompt_set(name_or_path: str | Path) -> PromptSet:
    """Load a built-in prompt set by name, or a user YAML/JSON file.

    Args:
        name_or_path (str | Path): A name from :func:`list_prompt_sets` (e.g. ``"gsm8k"``)
            or a path to a ``.yaml``/``.yml``/``.json`` file.

    Returns:
        PromptSet: The validated prompt set.

    Raises:
        ValueError: If the name is neither built-in nor an existing file, or the file
            content is invalid (the message says which field / edge / role).
    """
    key = str(name_or_path)
    builtin = list_prompt_sets()
    if key in builtin:
        root = resources.files("gcache.agents").joinpath(_PROMPT_SET_DIR)
        text = root.joinpath(f"{key}.yaml").read_text("utf-8")
        source = f"built-in prompt set {key!r}"
        is_json = False
    else:
        path = Path(key)
        if not path.is_file():
            raise ValueError(
                f"unknown prompt set {key!r}: not a built-in ({builtin}) nor an existing file"
            )
        text = path.read_text("utf-8")
        source = str(path)
        is_json = path.suffix.lower() == ".json"
    try:
        data = json.loads(text) if is_json else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{source}: cannot parse: {e}") from e
    try:
        prompt_set = PromptSet.from_dict(data)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from e
    logger.debug("loaded %s: %d roles, %d anchor edges", source, len(prompt_set.roles),
                 len(prompt_set.anchor_edges))
    return prompt_set
