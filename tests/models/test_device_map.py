"""``--device-map``: parsing, and a model split by accelerate (one layer offloaded to disk) computing exactly what
the same model on one device computes, KV messages and fuser bias included.

Torch has a single CPU device, so the split here is CPU + disk offload: the weights of layer 1 and of the LM head
live on disk (their parameters are on ``meta``) and accelerate's hooks bring them in for each forward. That exercises the dispatched
path (hooks, execution devices that differ from parameter devices) that multi-GPU maps take.
"""

from __future__ import annotations

import json

import pytest
import torch

from gcache.agents.pipelines import DECISION_MAKER
from gcache.agents.roles import load_prompt_set
from gcache.cli import main
from gcache.graph import preset_graph
from gcache.io import ResultStore
from gcache.models import load_model, tiny_random_model
from gcache.device_map import parse_device_map, uses_gpu
from gcache.modules.cache_fuser import CacheFuser
from gcache.reasoning import DecodeConfig, LatentEngine
from gcache.reasoning.executor import GraphExecutor
from gcache.reasoning.plans import baseline_plan, plan_from_graph

SPLIT = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
         "model.norm": "cpu", "lm_head": "disk"}
QUESTIONS = ["What is 2 + 3?", "A farmer has 17 sheep and buys 5 more. How many sheep now?", "Tom reads 12 pages."]
TARGETS = [" The answer is 5.", " 22", " #### 84"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """The tiny random Qwen3 saved as a transformers folder (safetensors), as a user's model would be."""
    path = tmp_path_factory.mktemp("tiny-qwen3")
    model, tok = tiny_random_model("qwen3", seed=0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_parse_device_map(tmp_path):
    assert parse_device_map(None) is None
    for name in ("auto", "balanced", "sequential", "cpu", "cuda:1"):
        assert parse_device_map(name) == name
    assert parse_device_map('{"model.layers.0": 0, "lm_head": "cpu"}') == {"model.layers.0": 0, "lm_head": "cpu"}
    yaml_file = tmp_path / "map.yaml"
    yaml_file.write_text("model.layers.0: 0\nmodel.layers.1: disk\n")
    assert parse_device_map(str(yaml_file)) == {"model.layers.0": 0, "model.layers.1": "disk"}
    assert uses_gpu({"model.layers.0": 0}) and uses_gpu({"lm_head": "cuda:1"}) and uses_gpu("auto")
    assert not uses_gpu(json.dumps(SPLIT)) and not uses_gpu("cpu") and not uses_gpu(None)  # dtype auto: fp32
    for bad, message in [("everywhere", "neither a strategy"), ("{not json", "not valid JSON"), ("{}", "empty"),
                         ('{"lm_head": [0, 1]}', "a device is")]:
        with pytest.raises(ValueError, match=message):
            parse_device_map(bad)


def test_bad_device_map_is_one_clear_line(tmp_path, capsys, tiny_folder):
    assert main(["eval", "--method", "single", "--model", str(tiny_folder), "--device-map", "{oops",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--device-map" in err and "not valid JSON" in err and "Traceback" not in err


def test_split_model_computes_what_one_device_computes(tiny_folder):
    whole, tok = load_model(str(tiny_folder), dtype="float32")
    split, _ = load_model(str(tiny_folder), dtype="float32", device_map=json.dumps(SPLIT))
    assert split.hf_device_map == SPLIT
    for module in (split.model.layers[1], split.lm_head):
        assert all(p.device.type == "meta" for p in module.parameters())  # really offloaded
    engines = [LatentEngine(whole, tok), LatentEngine(split, tok)]
    # where the offloaded parts compute (layer 1 keeps its cache there), not where their parameters show
    assert engines[1].layer_devices == [torch.device("cpu")] * 2
    assert engines[1].device == engines[1].output_device == torch.device("cpu")
    assert torch.equal(engines[0].realignment()[0], engines[1].realignment()[0])  # W_a from the offloaded head

    prompt_set = load_prompt_set("gsm8k")
    agents = prompt_set.role_names[:3]
    plan, _ = plan_from_graph(preset_graph("complete", agents), {r.name: r for r in prompt_set.roles},
                              kind="latent", message="own")
    fuser = CacheFuser(2, [*prompt_set.role_names, DECISION_MAKER.name])
    with torch.no_grad():  # a bias on every fused edge, different per layer, edge and slot kind
        for p in fuser.parameters():
            p.copy_(torch.linspace(-2.0, 1.0, p.numel()).reshape(p.shape))
    texts, nlls = [], []
    for engine in engines:
        fused, chain = (GraphExecutor(engine=engine, latent_steps=2, decode=DecodeConfig(max_new_tokens=6), fuser=f)
                        for f in (fuser, None))
        with torch.no_grad():
            texts.append([t.final_text for t in fused.run(plan, QUESTIONS)]
                         + [t.final_text for t in chain.run(baseline_plan("latentmas_seq"), QUESTIONS)])
            nlls.append(fused.answer_nll(plan, QUESTIONS, TARGETS))
    assert texts[0] == texts[1]
    torch.testing.assert_close(nlls[1], nlls[0], rtol=1e-5, atol=1e-6)


@pytest.mark.integration
@pytest.mark.parametrize("device_map", ["split", "auto"])
def test_eval_with_a_device_map_gives_the_same_greedy_answers(tmp_path, tiny_folder, device_map):
    map_file = tmp_path / "split.json"
    map_file.write_text(json.dumps(SPLIT))
    base = ["eval", "--method", "latentmas_seq", "--model", str(tiny_folder), "--data", str(tmp_path / "q.jsonl"),
            "--max-new-tokens", "8", "--latent-steps", "2", "--batch-size", "2", "--dtype", "float32"]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"question": q, "answer": "#### 1"}) + "\n" for q in QUESTIONS))
    assert main([*base, "--out", str(tmp_path / "one")]) == 0
    assert main([*base, "--device-map", str(map_file) if device_map == "split" else "auto",
                 "--out", str(tmp_path / "map")]) == 0
    one, mapped = ResultStore(tmp_path / "one").load(), ResultStore(tmp_path / "map").load()
    assert len(one) == 3
    for key in one:
        assert (mapped[key]["output"], mapped[key]["prompt_tokens"]) == (one[key]["output"], one[key]["prompt_tokens"])
