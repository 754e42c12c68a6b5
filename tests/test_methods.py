"""The method registry: every method builds its plan in each mode it allows and refuses the others in one line;
the CLI, config validation, identity keys and the README all read it; importing it (and ``gcache --help``) loads
no torch."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from gcache.choices import MODES
from gcache.config import ConfigError, RunConfig
from gcache.methods import (
    METHODS,
    Method,
    MethodError,
    get_method,
    identity_keys,
    list_methods,
    markdown_table,
    register_method,
)

ROOT = Path(__file__).parents[1]
FACTS = {"data_sha256", "task_version", "checkpoint_sha256", "package_version"}


def _plan(method: Method, mode: str):
    graph = roles = None
    if method.learns:
        from gcache.agents.pipelines import SEQUENTIAL
        from gcache.graph import preset_graph

        roles = {r.name: r for r in SEQUENTIAL[:3]}
        graph = preset_graph("chain", list(roles))
    plan, _ = method.build_plan(mode, graph=graph, roles=roles)
    return plan


@pytest.mark.parametrize("name", list_methods())
def test_each_method_builds_its_plan_in_its_modes_and_refuses_the_rest(name):
    method = get_method(name)
    for mode in MODES:
        if mode in method.modes:
            plan = _plan(method, mode)
            kinds = {n.kind for n in plan.nodes[:-1]} or {"text"}
            assert kinds == ({"latent"} if method.latent else {"text"})
            # local: nothing leaves the machine; api: no local model; hybrid: the answer comes from the API
            assert plan.uses_api == (mode != "local")
            assert plan.uses_local == (mode != "api")
            assert plan.nodes[-1].backend == ("local" if mode == "local" else "api")
        else:
            with pytest.raises(MethodError) as err:
                method.build_plan(mode)
            message = str(err.value)
            assert "\n" not in message and f"--method {name}" in message and "--mode" in message
            with pytest.raises(ConfigError) as err:
                RunConfig(method=name, mode=mode)
            assert err.value.key == "mode"


def test_gcache_over_the_api_is_refused_not_turned_into_gdesigner():
    with pytest.raises(ConfigError, match="gdesigner is the same learned graph passing text over the API"):
        RunConfig(method="gcache", mode="api")
    assert RunConfig(method="gcache", mode="local_cache").mode == "local"  # the seed's alias stays an alias


def test_cli_choices_and_help_come_from_the_registry():
    from gcache.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    for command in ("eval", "train"):
        method = next(a for a in sub[command]._actions if a.dest == "method")
        assert tuple(method.choices) == list_methods()
        for name in list_methods():
            assert f"{name} [{'/'.join(get_method(name).modes)}]" in " ".join(method.help.split())


def test_identity_keys_are_settings_or_facts_and_follow_the_mode():
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    for name in list_methods():
        for mode in get_method(name).modes:
            for training in (False, True):
                keys = identity_keys(name, mode, training=training)
                assert set(keys) <= fields | FACTS
                assert len(keys) == len(set(keys))
                assert ("model" in keys) == (mode != "api")
                assert ("api_model" in keys) == (mode != "local")
                assert ("lr" in keys) == training
                assert ("latent_steps" in keys) == get_method(name).latent
    # the settings a resumed eval may change are not part of it
    assert {"limit", "batch_size", "device", "api_retries", "out"}.isdisjoint(identity_keys("gcache", "local"))
    identity = RunConfig(method="gcache", dtype="auto").identity({"data_sha256": "abc"})
    assert identity["dtype"] == "float32" and identity["data_sha256"] == "abc"  # auto is compared as resolved


def test_registry_refuses_duplicates_and_bad_entries():
    with pytest.raises(ValueError, match="already registered"):
        register_method(METHODS["single"])
    with pytest.raises(ValueError, match="modes must be"):
        Method("x", "x", modes=("cloud",), learns=False, latent=False, plan="m:f")
    with pytest.raises(MethodError, match="choose one of single, text_chain"):
        get_method("telepathy")


def test_readme_table_is_the_registry():
    assert markdown_table() in (ROOT / "README.md").read_text()


def test_registry_config_and_help_import_no_torch():
    code = ("import sys\n"
            "from gcache.cli import main\n"
            "import gcache.config, gcache.methods\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "try:\n    main(['eval', '--help'])\nexcept SystemExit:\n    pass\n"
            "gcache.config.RunConfig(method='gcache')\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("NO-TORCH")
