"""The tier recommender and the memory / time model of every GPU notebook: the default models' shapes
against their real configs (tests/data/models), the spread split against transformers' own, every
catalog notebook's default run fitting the GPU it names, the catalog's times against the model."""

import json
from functools import lru_cache
from pathlib import Path

import pytest

from shared.planning import gpus, memory, models, recommend, stated_times, workloads

REPO = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO / "tests" / "data" / "models"


@lru_cache(maxsize=None)
def _catalog() -> dict:
    import build_notebooks as bn

    return {e.id: e for e in bn.load_catalog(REPO)}


def catalog_params(notebook: str) -> dict:
    """A catalog notebook's default parameters: its source's parameters cell with the catalog's overrides."""
    import build_notebooks as bn

    entry = _catalog()[notebook]
    source = (REPO / "notebooks_src" / entry.source).read_text()
    params = bn.parameter_defaults(source.split('# %% tags=["parameters"]')[1].split("# %%")[0])
    params.update(entry.parameters or {})
    if isinstance(params.get("LAYER"), int):
        params["LAYER"] = [params["LAYER"]]
    return params


def gpu_notebooks() -> list[tuple[str, str]]:
    """(notebook, GPU class) for every catalog notebook that names a GPU, and every class it names."""
    return [(nid, g) for nid, e in _catalog().items() for g in gpus.accelerator_classes(e.accelerator)]


def config_of(model_id: str):
    """The shipped config of a default model (tests/data/models/<org>__<name>/config.json), as transformers reads it."""
    from transformers import AutoConfig

    return AutoConfig.for_model(**json.loads((MODELS_DIR / model_id.replace("/", "__") / "config.json").read_text()))


@lru_cache(maxsize=None)
def meta_model(model_id: str):
    """The default model built from its real config on the meta device, in fp16 (no weights, no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config_of(model_id), dtype=torch.float16)


def transformers_split(model_id: str, max_memory: dict) -> dict:
    """GiB of weights per device (and the blocks on it) as transformers places the model under max_memory
    with device_map="sequential" (what models.load_model asks for when it is given max_memory)."""
    import warnings

    from transformers.integrations.accelerate import _get_device_map, compute_module_sizes

    model = meta_model(model_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        device_map = _get_device_map(model, "sequential", dict(max_memory), None)
    sizes, _ = compute_module_sizes(model, None, only_modules=False)
    out = {}
    for module, device in device_map.items():
        out.setdefault(device, {"gib": 0.0, "blocks": []})["gib"] += sizes[module] / memory.GIB

    def device_of(name: str):
        return device_map[max((m for m in device_map if m == "" or name == m or name.startswith(m + ".")), key=len)]

    for i in range(model.config.get_text_config().num_hidden_layers):
        out[device_of(f"model.layers.{i}")]["blocks"].append(i)
    return out


def test_memory_breakdown_adds_up_its_parts():
    m, g = models.MODELS["google/gemma-2-2b"], gpus.GPU_CLASSES["T4"]
    mem = memory.memory_breakdown(m, g, (12,), 16384, 8, 4096, 2**18)
    parts = mem["gpu0"]
    assert parts["total"] == pytest.approx(sum(v for k, v in parts.items() if k != "total"))
    assert parts["weights"] == pytest.approx(m.n_params * 2 / memory.GIB)  # fp16 on a T4
    sae_params = 2 * 2304 * 16384 + 16384 + 2304
    assert parts["sae_params"] == pytest.approx(sae_params * 4 / memory.GIB)
    assert parts["adam_state"] == pytest.approx(2 * parts["sae_params"])
    assert parts["sae_grads"] == pytest.approx(parts["sae_params"])
    assert parts["activation_buffer"] == pytest.approx(2**18 * 2304 * 4 / memory.GIB)


def test_two_t4_split_model_and_sae():
    m, g = models.MODELS["Qwen/Qwen3.5-4B"], gpus.GPU_CLASSES["2xT4"]
    mem = memory.memory_breakdown(m, g, (15,), m.d_sae, 4, 4096, 2**18)
    assert set(mem) == {"gpu0", "gpu1"}
    assert "weights" in mem["gpu0"] and "weights" not in mem["gpu1"]
    assert "adam_state" in mem["gpu1"] and "adam_state" not in mem["gpu0"]
    for part in mem.values():
        assert part["total"] == pytest.approx(sum(v for k, v in part.items() if k != "total"))


def test_smaller_batch_and_buffer_shrink_memory():
    m, g = models.MODELS["meta-llama/Llama-3.1-8B"], gpus.GPU_CLASSES["A100-80"]
    full = memory.memory_breakdown(m, g, (15,), m.d_sae, 8, 4096, 2**18)["gpu0"]
    small = memory.memory_breakdown(m, g, (15,), m.d_sae, 1, 4096, 2**15)["gpu0"]
    assert small["forward_activations"] < full["forward_activations"]
    assert small["activation_buffer"] < full["activation_buffer"] and small["total"] < full["total"]


# --------------------------------------------------------------------------- the default models' real shapes
@pytest.mark.parametrize("model_id", sorted(models.SHAPES))
def test_shapes_are_the_shipped_configs(model_id):
    """Every number the model uses for a default model is its real config's: the model built from
    tests/data/models/<org>__<name>/config.json (on the meta device: no weights) has these parameters,
    blocks, width, vocabulary, heads and KV width."""
    s = models.SHAPES[model_id]
    model = meta_model(model_id)
    text = model.config.get_text_config()
    n_params = sum(p.numel() for p in model.parameters())  # tied weights counted once
    assert n_params == pytest.approx(s.n_params, rel=2e-4)
    assert (text.num_hidden_layers, text.hidden_size, text.vocab_size, text.num_attention_heads) == \
        (s.n_layers, s.d_model, s.vocab, s.n_heads)
    assert bool(getattr(text, "tie_word_embeddings", False)) is s.tied
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    assert getattr(text, "num_key_value_heads", text.num_attention_heads) * head_dim == s.kv_dim
    assert s.eager_attention is (text.model_type == "gemma2") is s.logit_softcap


def test_every_default_model_ships_its_config():
    """Each GPU notebook's default MODEL_ID has a shipped config and a shape in models.SHAPES."""
    for notebook, _ in gpu_notebooks():
        model_id = catalog_params(notebook)["MODEL_ID"]
        assert model_id in models.SHAPES, notebook
        assert (MODELS_DIR / model_id.replace("/", "__") / "config.json").is_file(), notebook


@pytest.mark.parametrize("model_id", ["meta-llama/Llama-3.1-8B", "mistralai/Mistral-7B-v0.3", "Qwen/Qwen3.5-4B",
                                      "google/gemma-2-2b"])
@pytest.mark.parametrize("limits", [[11.24, 5.74], [6.0, 9.0], [4.0, 4.0, 9.0], [2.0, 30.0]])
def test_spread_arithmetic_is_transformers_split(model_id, limits):
    """memory.spread_weights places the same blocks and weights on each GPU as transformers does with
    device_map="sequential" under the same max_memory (or says it does not fit where transformers
    would offload to the disk)."""
    ours = memory.spread_weights(models.SHAPES[model_id], 2, limits)
    real = transformers_split(model_id, {i: int(lim * memory.GIB) for i, lim in enumerate(limits)})
    if ours is None:
        assert set(real) - set(range(len(limits))), "transformers fits what tiers says does not"
        return
    assert set(real) <= set(range(len(limits)))
    for i, piece in enumerate(ours):
        got = real.get(i, {"gib": 0.0, "blocks": []})
        assert piece["gib"] == pytest.approx(got["gib"], abs=0.01), (i, piece, got)
        assert piece["blocks"] == ((got["blocks"][0], got["blocks"][-1]) if got["blocks"] else None)


# --------------------------------------------------------------------------- every GPU notebook fits its GPU
@pytest.mark.parametrize("notebook, gpu", gpu_notebooks())
def test_every_gpu_notebook_fits_the_gpu_it_names(notebook, gpu):
    """The default run of each catalog notebook that names a GPU, per GPU and for the placement it
    really uses, stays under the usable memory: 90 % of what torch reports (a T4: 14.56 GiB, 13.1 usable)."""
    est = workloads.notebook_estimate(notebook, catalog_params(notebook), gpu)
    for device, parts in est.memory.items():
        assert parts["total"] <= est.usable_gib, (f"{notebook} on {gpu}: {device} needs {parts['total']:.2f} GiB "
                                                  f"> {est.usable_gib:.2f} usable: {parts}")


@pytest.mark.parametrize("notebook", [n for n, g in gpu_notebooks() if catalog_params(n).get("MODEL_DEVICE") == "spread"])
def test_spread_notebooks_fit_as_transformers_places_them(notebook):
    """A spread notebook (08, 09 on Kaggle's 2xT4): the model loaded as transformers loads it under the
    max_memory tier.spread_max_memory gives it, each GPU then holds its weights plus what runs there
    (the SAE side on the last, the forward where the hooked blocks are, the CUDA context) within the
    usable memory, and no weight is offloaded to the CPU or the disk."""
    P = catalog_params(notebook)
    g = gpus.gpu_class(gpus.accelerator_classes(_catalog()[notebook].accelerator)[0])
    from shared.recipes import tier

    max_memory = tier.spread_max_memory(P, config=config_of(P["MODEL_ID"]), totals_gib=[g.vram_gb] * g.n_gpus)
    real = transformers_split(P["MODEL_ID"], max_memory)
    assert set(real) == set(range(g.n_gpus)), real
    m = workloads.recipe_of(P)
    mem = memory.memory_breakdown(m, g, m.layers, m.d_sae, m.fwd_batch_seqs, m.sae_batch_tokens, m.buffer_rows(), "spread")
    for i in range(g.n_gpus):
        parts = dict(mem[f"gpu{i}"], weights=real[i]["gib"])
        if min(real[i]["blocks"]) <= max(m.layers):
            parts["forward_activations"] = memory.forward_gib(m.shape, m.fwd_batch_seqs, m.ctx, len(m.layers), 2)
        total = sum(v for k, v in parts.items() if k != "total")
        assert total <= memory.usable_gib(g), f"{notebook}: cuda:{i} needs {total:.2f} GiB: {parts}"
    sae_gpu = g.n_gpus - 1
    assert max(m.layers) < min(real[sae_gpu]["blocks"])  # the forward never runs on the SAE's GPU


def test_spread_loads_gpu_by_gpu_under_the_max_memory_we_pass(monkeypatch):
    """models.load_model(device="spread", max_memory=...) asks transformers for device_map="sequential"
    with exactly those limits (the split the tests above check); without limits, its balanced "auto"."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from shared.model import loading
    from shared.recipes import tier

    asked = []
    tiny, tok = loading.load_model("tiny:llama", device="cpu")
    monkeypatch.setattr(AutoConfig, "from_pretrained", lambda *a, **k: config_of("meta-llama/Llama-3.1-8B"))
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda model_id, **kw: asked.append(kw) or tiny)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda *a, **k: tok)
    P = catalog_params("08_explorer_llama3_8b_kaggle")
    limits = tier.spread_max_memory(P, config=config_of(P["MODEL_ID"]), totals_gib=[14.56, 14.56])
    assert limits[1] < limits[0]  # the SAE's GPU keeps room for it
    loading.load_model(P["MODEL_ID"], device="spread", max_memory=limits)
    loading.load_model(P["MODEL_ID"], device="spread")
    assert asked[0]["device_map"] == "sequential" and asked[0]["max_memory"] == limits
    assert asked[1]["device_map"] == "auto" and "max_memory" not in asked[1]
    assert tier.spread_max_memory({**P, "MODEL_DEVICE": "cuda:0"}, totals_gib=[14.56, 14.56]) is None


def test_spread_max_memory_reads_the_models_config_when_none_is_given():
    """The tier notebook and the command line pass no config: spread_max_memory reads MODEL_ID's own
    (load_config, no weights) and gives the limits it gives with that config passed in."""
    from shared.model.loading import load_config
    from shared.recipes import tier

    P = {**catalog_params("08_explorer_llama3_8b_kaggle"), "MODEL_ID": "tiny:llama", "LAYER": [1]}
    given = tier.spread_max_memory(P, config=load_config("tiny:llama"), totals_gib=[14.56, 14.56])
    assert given and tier.spread_max_memory(P, totals_gib=[14.56, 14.56]) == given


def test_recipes_are_the_catalog_notebooks_parameters():
    """One source of truth: each tier recipe notebook 07 recommends is the shape its catalog notebook
    trains (layers, d_sae, k, context, batches, buffer, tokens, placement)."""
    for m in models.MODELS.values():
        P = catalog_params(m.notebook)
        ours = workloads.recipe_of(P)
        assert P["MODEL_ID"] == m.model_id, m.notebook
        for name in ("layers", "d_sae", "k", "ctx", "sae_batch_tokens", "fwd_batch_seqs", "block_batches",
                     "total_tokens", "val_tokens"):
            assert getattr(ours, name) == getattr(m, name), (m.notebook, name)
        assert (ours.placement == "spread") is (m.placement == "spread"), m.notebook


def test_catalog_times_agree_with_the_model():
    """Every time a GPU notebook states is within 25 % of the model's prediction for its defaults on the
    GPU it names, and says whether it is measured (where, when) or estimated (from what)."""
    rows = stated_times.catalog_times(catalog_params)
    assert {r["notebook"] for r in rows} == {n for n, _ in gpu_notebooks()}
    for r in rows:
        assert r["agrees"], r
        assert "measured" in r["stated"] or "estimated" in r["stated"], r["stated"]
    tier3 = [r for r in rows if r["notebook"].startswith("03_")]
    assert {r["gpu"] for r in tier3} == {"H200", "RTX-PRO-6000"}
    assert "measured" in next(r["stated"] for r in tier3)


def test_t4_time_basis_is_stated_and_below_the_old_guess():
    """The T4's MFU is the H200-measured trainer efficiency at a T4's sustained GEMM share, well under
    the 0.55 once assumed; tier 1's 50M tokens take about 3 h there, not 1 h."""
    g = gpus.GPU_CLASSES["T4"]
    assert g.mfu == pytest.approx(gpus.T4_GEMM_SHARE * gpus.HOPPER_MFU / 0.52, abs=0.01)
    assert "estimated" in g.basis and "measured" in gpus.GPU_CLASSES["H200"].basis
    a = stated_times.catalog_anchor_check()
    assert 2.5 * 60 < a["model_minutes"] < 3.5 * 60 and "3 h" in a["stated"]


@pytest.mark.parametrize("budget", [45, 60, 90])
def test_t4_learn_is_tier1_gemma_recipe(budget):
    r = recommend.recommend("T4", budget, "learn")
    assert r.tier_notebook == "01_hobbyist_gemma2_2b_colab"
    assert r.model_id == "google/gemma-2-2b"
    assert (r.k, r.d_sae, r.layer) == (64, 16384, 12)
    assert 10e6 <= r.tokens <= 30e6  # ~5.1k tokens/s after ~4 min of setup
    assert r.est_minutes <= budget
    assert r.memory["gpu0"]["total"] <= memory.usable_gib(gpus.GPU_CLASSES["T4"])
    assert r.parameters["TOTAL_TOKENS"] == r.tokens and r.parameters["LAYER"] == 12
    assert r.parameters["BLOCK_BATCHES"] == 32 and r.parameters["MODEL_BATCH_SIZE"] == 8  # the notebook's own


@pytest.mark.parametrize("goal", recommend.GOALS)
@pytest.mark.parametrize("budget", [60, 600, 6000])
def test_27b_never_recommended_on_t4(goal, budget):
    for gpu in ("T4", "2xT4"):
        r = recommend.recommend(gpu, budget, goal)
        assert r.tier_notebook != "03_papergrade_qwen36_27b_cloud"
        rows = [o for o in recommend.options_table(gpu, budget, goal) if o["model_id"] == "Qwen/Qwen3.6-27B"]
        assert rows and all(not o["fits"] and o["status"] == "rejected" for o in rows)


@pytest.mark.parametrize("gpu", ["T4", "2xT4", "L4", "A100-80", "H100-80", "cpu"])
@pytest.mark.parametrize("goal", recommend.GOALS)
def test_bigger_budget_never_fewer_tokens(gpu, goal):
    last = {}
    for budget in (30, 45, 60, 120, 300, 600, 1200, 3000):
        for o in recommend.options_table(gpu, budget, goal):
            key = (o["model_id"], tuple(o["layers"]))
            assert o["tokens"] >= last.get(key, 0)
            last[key] = o["tokens"]


def test_h100_paper_is_tier3():
    r = recommend.recommend("H100-80", 900, "paper")
    assert r.tier_notebook == "03_papergrade_qwen36_27b_cloud" and r.k == 128 and r.d_sae == 65536
    assert r.tokens >= recommend.MIN_TOKENS["paper"]
    assert r.layers == (31,) and "middle layer only" in r.note  # the three-SAE run needs a 96 GB card
    big = recommend.recommend("H200", 1200, "paper")  # enough VRAM for the three-layer recipe
    assert big.layers == (11, 31, 55) and big.parameters["LAYER"] == [11, 31, 55]
    assert big.parameters["BLOCK_BATCHES"] == "auto"
    # tier 3 has its own notebook now: no stand-in
    assert big.run_in == "03_papergrade_qwen36_27b_cloud" and "not released yet" not in big.note


def test_2xt4_explore_is_tier2_qwen():
    r = recommend.recommend("2xT4", 600, "explore")
    assert r.tier_notebook == "02_explorer_qwen35_4b_kaggle" and (r.d_sae, r.k) == (40960, 128)
    assert 50e6 <= r.tokens < 150e6  # a 10 h budget buys ~60M of the notebook's 150M tokens
    assert r.run_in == "02_explorer_qwen35_4b_kaggle" and r.parameters["MODEL_ID"] == "Qwen/Qwen3.5-4B"
    assert r.layers == (18,) and r.parameters["MODEL_DEVICE"] == "cuda:0"  # the model on GPU 0, the SAE on GPU 1


def test_2xt4_llama_is_spread_with_room_for_the_sae():
    rows = {o["model_id"]: o for o in recommend.options_table("2xT4", 1500, "explore")}
    for model_id in ("meta-llama/Llama-3.1-8B", "mistralai/Mistral-7B-v0.3"):
        assert rows[model_id]["fits"] and rows[model_id]["placement"] == "spread"
        assert rows[model_id]["peak_gb"] <= memory.usable_gib(gpus.GPU_CLASSES["2xT4"])


def test_recommended_parameters_exist_in_the_recipe_notebook():
    """Every pasted name must be a parameter of the tier recipe, or the paste silently does nothing."""
    import build_notebooks as bn

    recipe = (REPO / "notebooks_src" / "tier_recipe.py").read_text()
    names = set(bn.parameter_defaults(recipe.split('# %% tags=["parameters"]')[1].split("# %%")[0]))
    for gpu, budget, goal in [("T4", 60, "learn"), ("2xT4", 600, "explore"), ("H200", 1200, "paper")]:
        r = recommend.recommend(gpu, budget, goal)
        assert set(r.parameters) <= names, set(r.parameters) - names


def test_cpu_falls_back_to_colab_t4():
    r = recommend.recommend(None, 60, "learn")
    assert r.gpu == "T4" and "T4" in r.note and r.tier_notebook == "01_hobbyist_gemma2_2b_colab"


def test_options_table_rows_are_complete_and_json():
    rows = recommend.options_table("T4", 60, "learn")
    assert len(rows) == len(models.MODELS) + 1  # the 27B recipe is also weighed as a single middle layer
    assert sum(r["status"] == "recommended" for r in rows) == 1
    for r in rows:
        assert r["status"] == "recommended" or r["reason"]
    json.dumps(rows)
    json.dumps(recommend.recommend("T4", 60).to_dict())
    assert recommend.options_table("T4", 60, "learn") == rows  # deterministic


@pytest.mark.parametrize(
    "name,cls",
    [("Tesla T4", "T4"), ("NVIDIA A100-SXM4-80GB", "A100-80"), ("NVIDIA A100-SXM4-40GB", "A100-40"),
     ("NVIDIA H100 80GB HBM3", "H100-80"), ("NVIDIA L4", "L4"), ("NVIDIA A10G", "A10G"),
     ("NVIDIA GeForce RTX 4090", "RTX-4090"), ("NVIDIA H200", "H200"), (None, "cpu")],
)
def test_gpu_name_mapping(name, cls):
    assert gpus.detect_gpu_class(name) == cls


def test_gpu_name_mapping_counts_and_unknowns():
    assert gpus.detect_gpu_class("Tesla T4", count=2) == "2xT4"
    assert gpus.detect_gpu_class("NVIDIA A100 80GB PCIe", total_gb=79.2) == "A100-80"
    assert gpus.detect_gpu_class("Some Future GPU", total_gb=24.0) in ("L4", "A10G", "RTX-4090")
    with pytest.raises(ValueError, match="set GPU to one of"):
        gpus.detect_gpu_class("Some Future GPU")
    assert gpus.detect_gpu_class() in gpus.GPU_CLASSES  # this machine (CPU in CI)
    assert gpus.gpu_class("h100-80").name == "H100-80"


def test_errors():
    with pytest.raises(ValueError, match="T4.*H100-80"):
        recommend.recommend("GTX 480", 35, "learn")
    for bad in (0, -5, float("nan")):
        with pytest.raises(ValueError, match="BUDGET_MINUTES"):
            recommend.recommend("T4", bad, "learn")
    with pytest.raises(ValueError, match="GOAL"):
        recommend.recommend("T4", 35, "fun")
    with pytest.raises(ValueError, match="too short"):
        recommend.recommend("T4", 2, "learn")
    with pytest.raises(ValueError, match="names no GPU class"):
        gpus.accelerator_classes("a quantum annealer")


def test_released_notebooks_are_the_catalogs_tier_notebooks():
    """tiers reads the catalog (via the generated shared/notebook/catalog.py), never a hand copy."""
    import build_notebooks as bn
    from conftest import REPO

    entries = bn.load_catalog(REPO)
    assert models.RELEASED_NOTEBOOKS == tuple(e.id for e in entries if e.source == models.TIER_SOURCE)
    assert (REPO / "shared" / bn.CATALOG_MODULE).read_text() == bn.catalog_module(entries)  # not stale
    assert {m.notebook for m in models.MODELS.values()} <= set(models.RELEASED_NOTEBOOKS)  # no stand-ins left


@pytest.mark.parametrize("gpu, fits", [("RTX-PRO-6000", True), ("H200", True), ("H100-80", False),
                                       ("A100-40", False), ("2xT4", False)])
def test_27b_three_sae_run_needs_a_96gb_card(gpu, fits):
    """The tier-3 run (bf16 27B + three 65k x 5120 SAEs with Adam, the "auto" buffer) fits a 96 GB card, not 80 or 48 GB."""
    m, g = models.MODELS["Qwen/Qwen3.6-27B"], gpus.GPU_CLASSES[gpu]
    option = recommend._weigh(m, g, (11, 31, 55), 24 * 60, "paper", recommend.MIN_TOKENS["paper"])
    assert option.fits is fits
    mem = memory.memory_breakdown(m, g, (11, 31, 55), 65536, 1, 4096, 2**15)
    mem = mem.get("gpu1", mem["gpu0"])  # the SAE side (gpu1 on 2xT4)
    one_sae = (2 * 5120 * 65536 + 65536 + 5120) * 4 / memory.GIB
    assert mem["sae_params"] == pytest.approx(3 * one_sae) and mem["adam_state"] == pytest.approx(6 * one_sae)
    assert mem["sae_grads"] == pytest.approx(one_sae)  # freed after each SAE's step: one at a time
    if fits:  # 200M tokens in about a day
        assert 200e6 / option.tokens_per_s / 3600 < 24


def test_auto_buffer_leaves_room_for_adam_on_a_96gb_card():
    """Issue 20: tier 3 on a 96 GB card, BLOCK_BATCHES = "auto". Sized the old way, before Adam's moments
    exist (half the memory free after the weights and SAEs, capped at 128 forwards), the buffer plus
    Adam's 15 GiB, a gradient and the step tensors fill the card to within half a GiB of what torch
    reports, past the usable 90 %; sized by buffer_budget_bytes with the step's needs set aside, the
    whole run stays within the usable memory."""
    m, g = models.MODELS["Qwen/Qwen3.6-27B"], gpus.GPU_CLASSES["RTX-PRO-6000"]
    layers, rows_per_forward = m.layers, m.fwd_batch_seqs * m.ctx
    sae = memory.sae_training_gib(m.d_model, m.d_sae, 3, m.sae_batch_tokens)
    held = memory.CUDA_CONTEXT_GB + m.n_params * 2 / memory.GIB + sae["sae_params"]  # when the buffer is sized
    free = (g.vram_gb - held) * memory.GIB
    row_bytes = m.d_model * len(layers) * memory.BUFFER_BYTES
    steps = sae["adam_state"] + sae["sae_grads"] + sae["sae_activations"]
    assert steps == pytest.approx(memory.step_reserve_gib(m.d_model, m.d_sae, 3, m.sae_batch_tokens))
    old = memory.auto_block_batches(0.5 * free, row_bytes, rows_per_forward, m.sae_batch_tokens)
    new = memory.auto_block_batches(memory.buffer_budget_bytes(free, steps * memory.GIB, g.vram_gb * memory.GIB),
                                    row_bytes, rows_per_forward, m.sae_batch_tokens)
    forward = memory.forward_gib(m.shape, m.fwd_batch_seqs, m.ctx, 3, 2)

    def peak(blocks):
        return held + steps + forward + (blocks * rows_per_forward + m.sae_batch_tokens) * row_bytes / memory.GIB

    assert peak(old) > memory.usable_gib(g) and g.vram_gb - peak(old) < 1.0  # no room left for fragmentation
    assert 1 <= new < old and peak(new) <= memory.usable_gib(g)
    mem = memory.memory_breakdown(m, g, layers, m.d_sae, m.fwd_batch_seqs, m.sae_batch_tokens, None)["gpu0"]
    assert mem["activation_buffer"] == pytest.approx((new * rows_per_forward + m.sae_batch_tokens) * row_bytes / memory.GIB)
    assert mem["total"] <= memory.usable_gib(g)


def test_qwen35_4b_split_fits_two_t4s():
    """Tier 2: Qwen3.5-4B in fp16 on cuda:0, the 40k SAE and its "auto" buffer on cuda:1."""
    m, g = models.MODELS["Qwen/Qwen3.5-4B"], gpus.GPU_CLASSES["2xT4"]
    option = recommend._weigh(m, g, (18,), 30 * 60, "explore", recommend.MIN_TOKENS["explore"])
    assert option.fits and option.placement == "split"
    assert all(part["total"] <= memory.usable_gib(g) for part in option.memory_gb.values())
    assert option.tokens >= 150e6  # the notebook's 150M tokens in ~25 h (three Kaggle sessions; it resumes)


@pytest.mark.slow
def test_fit_check_dry_runs_on_cpu(tmp_path):
    """bench/train_loop.py --fit-check (the GPU step of bench/gpu_checks.sh) runs its whole logic on the CPU
    with the toy model in place of the notebook's: parameters from the catalog, the trainer under the
    emulated platform memory, the prediction of the training phase beside the (here absent) peak."""
    import subprocess
    import sys

    out = tmp_path / "fit.json"
    cmd = [sys.executable, str(REPO / "bench" / "train_loop.py"), "--device", "cpu", "--model", "toy", "--fit-check",
           "08_explorer_llama3_8b_kaggle", "--steps", "6", "--set", "LAYER=2", "--set", "D_SAE=256", "--set", "K=8",
           "--set", "CONTEXT_LEN=32", "--set", "MODEL_BATCH_SIZE=4", "--set", "BATCH_TOKENS=128", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["platform"] == "2xT4" and result["single_gpu_emulation_of"] == 2 and result["steps"] == 6
    assert result["parameters"]["BLOCK_BATCHES"] == 8 and result["parameters"]["MODEL_DEVICE"] == "spread"
    assert set(result["predicted_parts"]) == {"gpu0", "gpu1"} and 0 < result["predicted_gib"] < result["usable_gib"]
    assert result["measured_gib"] is None  # no GPU here: the peak comes from a lent one


def test_needs_time_basis_names_the_models_assumption():
    """The title cell's `time_basis` (catalog needs) and the throughput model say the same thing: every
    GPU notebook whose time is estimated for a T4 names the T4 MFU planning/gpus.py assumes, and none still
    names an MFU the model no longer uses."""
    import tomllib

    entries = tomllib.loads((REPO / "notebooks_src" / "catalog.toml").read_text())["notebook"]
    t4 = f"{gpus.GPU_CLASSES['T4'].mfu:.2f} of its fp16 peak"
    for e in entries:
        basis = e["needs"]["time_basis"]
        if "T4" in e["accelerator"] and basis.startswith("estimated") and "arithmetic" not in basis:
            assert t4 in basis, (e["id"], basis)
        assert "0.55 of its" not in basis and "0.40 of its" not in basis, (e["id"], basis)
