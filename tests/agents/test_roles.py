"""Tests for gcache.agents.roles: built-in prompt sets, loading, validation."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml

from gcache.agents.roles import PromptSet, Role, list_prompt_sets, load_prompt_set

GSM8K_AGENTS = ("Math Solver", "Mathematical Analyst", "Programming Expert", "Inspector")
MMLU_ROLES = (
    "Knowlegable Expert", "Critic", "Mathematician", "Psychologist", "Historian",
    "Doctor", "Lawyer", "Economist", "Programmer",
)
HUMANEVAL_ROLES = (
    "Project Manager", "Algorithm Designer", "Programming Expert", "Test Analyst", "Bug Fixer",
)


def _valid() -> dict:
    return {
        "domain": "toy",
        "roles": [{"name": "A", "profile": "first"}, {"name": "B", "profile": "second"}],
        "anchor_edges": [["A", "B"]],
        "default_agents": ["A", "B", "A"],
    }


def test_builtin_names():
    assert list_prompt_sets() == ["gsm8k", "humaneval", "mmlu"]


def test_builtin_contents():
    gsm = load_prompt_set("gsm8k")
    assert gsm.default_agents == GSM8K_AGENTS
    assert gsm.role_names == GSM8K_AGENTS
    assert load_prompt_set("mmlu").role_names == MMLU_ROLES
    he = load_prompt_set("humaneval")
    assert he.role_names == HUMANEVAL_ROLES
    assert he.default_agents == HUMANEVAL_ROLES


@pytest.mark.parametrize("name", ["gsm8k", "mmlu", "humaneval"])
def test_builtin_profiles_are_generic(name):
    ps = load_prompt_set(name)
    for role in ps.roles:
        assert len(role.profile) > 40
        assert not re.search(r"qwen|llama|gpt|claude|mistral", role.profile, re.I), role.name


def test_anchor_adjacency_matches_edges():
    ps = load_prompt_set("gsm8k")
    agents = ("Inspector", "Math Solver", "Inspector", "Programming Expert")
    adj = ps.anchor_adjacency(agents)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    for u in range(4):
        for v in range(4):
            expected[u, v] = u != v and (agents[u], agents[v]) in set(ps.anchor_edges)
    assert torch.equal(adj, expected)
    # Math Solver -> Inspector is an anchor edge, so both Inspector copies receive it.
    assert adj[1, 0] and adj[1, 2] and not adj[0, 2]


def test_select_agents():
    ps = load_prompt_set("gsm8k")
    assert ps.select_agents() == GSM8K_AGENTS
    assert ps.select_agents(2) == GSM8K_AGENTS[:2]
    assert ps.select_agents(6) == GSM8K_AGENTS + GSM8K_AGENTS[:2]
    with pytest.raises(ValueError, match="num_agents must be >= 1"):
        ps.select_agents(0)
    assert ps.profiles(["Inspector"]) == [ps.role("Inspector").profile]
    with pytest.raises(KeyError, match="unknown role 'Nobody'"):
        ps.role("Nobody")


def test_roundtrip_and_user_files(tmp_path):
    data = _valid()
    ps = PromptSet.from_dict(data)
    assert ps.to_dict() == data
    assert ps.default_agents == ("A", "B", "A")
    yaml_path = tmp_path / "mine.yaml"
    yaml_path.write_text(yaml.safe_dump(data))
    json_path = tmp_path / "mine.json"
    json_path.write_text(json.dumps(data))
    assert load_prompt_set(yaml_path) == ps
    assert load_prompt_set(str(json_path)) == ps


def test_unknown_name_lists_builtins():
    with pytest.raises(ValueError, match=r"unknown prompt set 'nope'.*gsm8k"):
        load_prompt_set("nope")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["anchor_edges"].append(["A", "X"]),
         "anchor edge ('A', 'X'): unknown role 'X'; roles are ['A', 'B']"),
        (lambda d: d["anchor_edges"].append(["B", "B"]), "anchor edge ('B', 'B'): self-loop"),
        (lambda d: d["roles"].append({"name": "A", "profile": "again"}),
         "duplicate role names: ['A']"),
        (lambda d: d.pop("default_agents"), "missing field(s) ['default_agents']"),
        (lambda d: d["default_agents"].append("Z"),
         "default_agents[3]: unknown role 'Z'; roles are ['A', 'B']"),
        (lambda d: d.update(extra=1), "unknown field(s) ['extra']"),
        (lambda d: d["roles"][0].update(profile=""), "role 'A': profile must be a non-empty"),
        (lambda d: d["roles"][1].pop("profile"), "roles[1]: expected a mapping"),
        (lambda d: d.update(default_agents=[]), "default_agents must name at least one role"),
    ],
)
def test_validation_errors(tmp_path, mutate, message):
    data = _valid()
    mutate(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError) as info:
        load_prompt_set(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)  # the file is named too


def test_role_validation():
    with pytest.raises(ValueError, match="role name must be a non-empty string"):
        Role("  ", "x")
    with pytest.raises(ValueError, match="role 'A': profile must be a non-empty string"):
        Role("A", "")


def test_unparseable_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot parse"):
        load_prompt_set(path)
