"""The tier recommender: memory model arithmetic, the catalog's anchors, monotonicity, names, errors."""

import json

import pytest

from shared import tiers


def test_memory_breakdown_adds_up_its_parts():
    m, g = tiers.MODELS["google/gemma-2-2b"], tiers.GPU_CLASSES["T4"]
    mem = tiers.memory_breakdown(m, g, (12,), 16384, 8, 4096, 2**18)
    parts = mem["gpu0"]
    assert parts["total"] == pytest.approx(sum(v for k, v in parts.items() if k != "total"))
    assert parts["weights"] == pytest.approx(m.n_params * 2 / tiers.GIB)  # fp16 on a T4
    sae_params = 2 * 2304 * 16384 + 16384 + 2304
    assert parts["sae_params"] == pytest.approx(sae_params * 4 / tiers.GIB)
    assert parts["adam_state"] == pytest.approx(2 * parts["sae_params"])
    assert parts["sae_grads"] == pytest.approx(parts["sae_params"])
    assert parts["activation_buffer"] == pytest.approx(2**18 * 2304 * 4 / tiers.GIB)


def test_two_t4_split_model_and_sae():
    m, g = tiers.MODELS["Qwen/Qwen3.5-4B"], tiers.GPU_CLASSES["2xT4"]
    mem = tiers.memory_breakdown(m, g, (15,), m.d_sae, 4, 4096, 2**18)
    assert set(mem) == {"gpu0", "gpu1"}
    assert "weights" in mem["gpu0"] and "weights" not in mem["gpu1"]
    assert "adam_state" in mem["gpu1"] and "adam_state" not in mem["gpu0"]
    for part in mem.values():
        assert part["total"] == pytest.approx(sum(v for k, v in part.items() if k != "total"))


def test_truncation_and_batch_shrink_memory():
    m, g = tiers.MODELS["meta-llama/Llama-3.1-8B"], tiers.GPU_CLASSES["A100-80"]
    full = tiers.memory_breakdown(m, g, (15,), m.d_sae, 8, 4096, 2**18)["gpu0"]
    cut = tiers.memory_breakdown(m, g, (15,), m.d_sae, 8, 4096, 2**18, truncate=True)["gpu0"]
    small = tiers.memory_breakdown(m, g, (15,), m.d_sae, 1, 4096, 2**18)["gpu0"]
    assert cut["weights"] < full["weights"] and small["forward_activations"] < full["forward_activations"]


@pytest.mark.parametrize("budget", [30, 35, 40])
def test_t4_learn_is_tier1_gemma_recipe(budget):
    r = tiers.recommend("T4", budget, "learn")
    assert r.tier_notebook == "01_hobbyist_gemma2_2b_colab"
    assert r.model_id == "google/gemma-2-2b"
    assert (r.k, r.d_sae, r.layer) == (64, 16384, 12)
    assert 20e6 <= r.tokens <= 80e6  # the catalog's "~50M tokens in 30-40 min" ballpark
    assert r.est_minutes <= budget
    assert r.memory["gpu0"]["total"] <= tiers.USABLE_FRACTION * 15.0
    assert r.parameters["TOTAL_TOKENS"] == r.tokens and r.parameters["LAYER"] == 12


def test_catalog_anchor_is_reported_honestly():
    a = tiers.catalog_anchor_check()
    assert 2.0 < a["gflop_per_token"] < 2.6
    assert a["implied_mfu"] > a["assumed_mfu"]
    assert 30 < a["model_minutes"] < 90


@pytest.mark.parametrize("goal", tiers.GOALS)
@pytest.mark.parametrize("budget", [35, 600, 6000])
def test_27b_never_recommended_on_t4(goal, budget):
    for gpu in ("T4", "2xT4"):
        r = tiers.recommend(gpu, budget, goal)
        assert r.tier_notebook != "03_papergrade_qwen36_27b_cloud"
        rows = [o for o in tiers.options_table(gpu, budget, goal) if o["model_id"] == "Qwen/Qwen3.6-27B"]
        assert rows and all(not o["fits"] and o["status"] == "rejected" for o in rows)


@pytest.mark.parametrize("gpu", ["T4", "2xT4", "L4", "A100-80", "H100-80", "cpu"])
@pytest.mark.parametrize("goal", tiers.GOALS)
def test_bigger_budget_never_fewer_tokens(gpu, goal):
    last = {}
    for budget in (30, 45, 60, 120, 300, 600, 1200, 3000):
        for o in tiers.options_table(gpu, budget, goal):
            key = (o["model_id"], tuple(o["layers"]))
            assert o["tokens"] >= last.get(key, 0)
            last[key] = o["tokens"]


def test_h100_paper_is_tier3():
    r = tiers.recommend("H100-80", 600, "paper")
    assert r.tier_notebook == "03_papergrade_qwen36_27b_cloud" and r.k == 128 and r.d_sae == 65536
    assert r.tokens >= tiers.MIN_TOKENS["paper"]
    big = tiers.recommend("H200", 1200, "paper")  # enough VRAM for the three-layer recipe
    assert big.layers == (11, 31, 55) and big.parameters["LAYER"] == [11, 31, 55]
    # tier 3 has its own notebook now: no stand-in
    assert big.run_in == "03_papergrade_qwen36_27b_cloud" and "not released yet" not in big.note


def test_2xt4_explore_is_tier2_qwen():
    r = tiers.recommend("2xT4", 600, "explore")
    assert r.tier_notebook == "02_explorer_qwen35_4b_kaggle" and (r.d_sae, r.k) == (40960, 128)
    assert r.tokens >= 150e6  # the catalog's 150M tokens fit in a Kaggle session
    assert r.run_in == "02_explorer_qwen35_4b_kaggle" and r.parameters["MODEL_ID"] == "Qwen/Qwen3.5-4B"
    assert r.layers == (18,) and r.parameters["MODEL_DEVICE"] == "cuda:0"  # the model on GPU 0, the SAE on GPU 1


def test_recommended_parameters_exist_in_the_recipe_notebook():
    """Every pasted name must be a parameter of the tier recipe, or the paste silently does nothing."""
    import build_notebooks as bn
    from conftest import REPO

    recipe = (REPO / "notebooks_src" / "tier_recipe.py").read_text()
    names = set(bn.parameter_defaults(recipe.split('# %% tags=["parameters"]')[1].split("# %%")[0]))
    for gpu, budget, goal in [("T4", 35, "learn"), ("2xT4", 600, "explore"), ("H200", 1200, "paper")]:
        r = tiers.recommend(gpu, budget, goal)
        assert set(r.parameters) <= names, set(r.parameters) - names


def test_cpu_falls_back_to_colab_t4():
    r = tiers.recommend(None, 35, "learn")
    assert r.gpu == "T4" and "T4" in r.note and r.tier_notebook == "01_hobbyist_gemma2_2b_colab"


def test_options_table_rows_are_complete_and_json():
    rows = tiers.options_table("T4", 35, "learn")
    assert len(rows) == len(tiers.MODELS) + 1  # the 27B recipe is also weighed as a single middle layer
    assert sum(r["status"] == "recommended" for r in rows) == 1
    for r in rows:
        assert r["status"] == "recommended" or r["reason"]
    json.dumps(rows)
    json.dumps(tiers.recommend("T4", 35).to_dict())
    assert tiers.options_table("T4", 35, "learn") == rows  # deterministic


@pytest.mark.parametrize(
    "name,cls",
    [("Tesla T4", "T4"), ("NVIDIA A100-SXM4-80GB", "A100-80"), ("NVIDIA A100-SXM4-40GB", "A100-40"),
     ("NVIDIA H100 80GB HBM3", "H100-80"), ("NVIDIA L4", "L4"), ("NVIDIA A10G", "A10G"),
     ("NVIDIA GeForce RTX 4090", "RTX-4090"), ("NVIDIA H200", "H200"), (None, "cpu")],
)
def test_gpu_name_mapping(name, cls):
    assert tiers.detect_gpu_class(name) == cls


def test_gpu_name_mapping_counts_and_unknowns():
    assert tiers.detect_gpu_class("Tesla T4", count=2) == "2xT4"
    assert tiers.detect_gpu_class("NVIDIA A100 80GB PCIe", total_gb=79.2) == "A100-80"
    assert tiers.detect_gpu_class("Some Future GPU", total_gb=24.0) in ("L4", "A10G", "RTX-4090")
    with pytest.raises(ValueError, match="set GPU to one of"):
        tiers.detect_gpu_class("Some Future GPU")
    assert tiers.detect_gpu_class() in tiers.GPU_CLASSES  # this machine (CPU in CI)
    assert tiers.gpu_class("h100-80").name == "H100-80"


def test_errors():
    with pytest.raises(ValueError, match="T4.*H100-80"):
        tiers.recommend("GTX 480", 35, "learn")
    for bad in (0, -5, float("nan")):
        with pytest.raises(ValueError, match="BUDGET_MINUTES"):
            tiers.recommend("T4", bad, "learn")
    with pytest.raises(ValueError, match="GOAL"):
        tiers.recommend("T4", 35, "fun")
    with pytest.raises(ValueError, match="too short"):
        tiers.recommend("T4", 2, "learn")


def test_released_notebooks_are_the_catalogs_tier_notebooks():
    """tiers reads the catalog (via the generated shared/_catalog.py), never a hand copy."""
    import build_notebooks as bn
    from conftest import REPO

    entries = bn.load_catalog(REPO)
    assert tiers.RELEASED_NOTEBOOKS == tuple(e.id for e in entries if e.source == tiers.TIER_SOURCE)
    assert (REPO / "shared" / bn.CATALOG_MODULE).read_text() == bn.catalog_module(entries)  # not stale
    assert {m.notebook for m in tiers.MODELS.values()} <= set(tiers.RELEASED_NOTEBOOKS)  # no stand-ins left


@pytest.mark.parametrize("gpu, fits", [("RTX-PRO-6000", True), ("H200", True), ("H100-80", False),
                                       ("A100-40", False), ("2xT4", False)])
def test_27b_three_sae_run_needs_a_96gb_card(gpu, fits):
    """The tier-3 run (bf16 27B + three 65k x 5120 SAEs with Adam, buffer) fits a 96 GB card, not 80 or 48 GB."""
    m, g = tiers.MODELS["Qwen/Qwen3.6-27B"], tiers.GPU_CLASSES[gpu]
    option = tiers._weigh(m, g, (11, 31, 55), 24 * 60, "paper", tiers.MIN_TOKENS["paper"])
    assert option.fits is fits
    mem = tiers.memory_breakdown(m, g, (11, 31, 55), 65536, 1, 4096, m.buffer_tokens)
    mem = mem.get("gpu1", mem["gpu0"])  # the SAE side (gpu1 on 2xT4)
    one_sae = (2 * 5120 * 65536 + 65536 + 5120) * 4 / tiers.GIB
    assert mem["sae_params"] == pytest.approx(3 * one_sae) and mem["adam_state"] == pytest.approx(6 * one_sae)
    assert mem["sae_grads"] == pytest.approx(one_sae)  # freed after each SAE's step: one at a time
    if fits:  # 200M tokens in about a day
        assert 200e6 / option.tokens_per_s / 3600 < 24


def test_qwen35_4b_split_fits_two_t4s():
    """Tier 2: Qwen3.5-4B in fp16 on cuda:0, the 40k SAE and its buffer on cuda:1, 150M tokens in ~8 h
    (its hybrid forward at the slowdown measured on an H200; Kaggle sessions end at 12 h, it resumes)."""
    m, g = tiers.MODELS["Qwen/Qwen3.5-4B"], tiers.GPU_CLASSES["2xT4"]
    option = tiers._weigh(m, g, (18,), 9 * 60, "explore", tiers.MIN_TOKENS["explore"])
    assert option.fits and not option.truncate_after_layer
    assert all(part["total"] <= tiers.USABLE_FRACTION * g.vram_gb for part in option.memory_gb.values())
    assert option.tokens >= 150e6
