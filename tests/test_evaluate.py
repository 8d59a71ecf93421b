"""Held-out validation: a perfect SAE recovers all of the CE loss, a zero SAE none of it."""
from __future__ import annotations

import json

import pytest
import torch

from shared.data import token_batches
from shared.synthetic import synthetic_texts
from shared.evaluate import evaluate_saes, summarize, write_val_report
from shared.models import d_model, load_model
from shared.sae import SAEConfig, build_sae


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny:llama")


def _batches(tokenizer, n=2):
    return list(token_batches(synthetic_texts(40, seed=7), tokenizer, 32, 4, max_batches=n))


def _identity_sae(d: int):
    """TopK SAE with latents ±x_i and k = d: exactly the positive half fires, so x_hat == x."""
    sae = build_sae(SAEConfig(d_in=d, d_sae=2 * d, k=d))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_perfect_reconstruction_recovers_all_ce_loss(tiny):
    model, tokenizer = tiny
    d = d_model(model)
    report = evaluate_saes(model, tokenizer, {1: _identity_sae(d)}, _batches(tokenizer))
    r = report["1"]
    assert r["var_expl"] == pytest.approx(1.0, abs=1e-5)
    assert r["ce_loss_spliced"] == pytest.approx(r["ce_loss_clean"], abs=1e-5)
    assert r["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert r["kl_div_spliced"] == pytest.approx(0.0, abs=1e-6)
    assert r["l0"] <= d and r["eval_tokens"] > 0


def test_zero_reconstruction_recovers_nothing(tiny):
    model, tokenizer = tiny
    d = d_model(model)
    sae = _identity_sae(d)
    with torch.no_grad():
        sae.W_dec.zero_()
    report = evaluate_saes(model, tokenizer, {2: sae}, _batches(tokenizer))
    r = report["2"]
    assert r["ce_loss_spliced"] == pytest.approx(r["ce_loss_zero_ablation"], abs=1e-6)
    assert r["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-4)
    assert r["var_expl"] < 0.05


def test_report_keeps_the_originals_shape(tiny, tmp_path):
    model, tokenizer = tiny
    d = d_model(model)
    saes = {0: build_sae(SAEConfig(d_in=d, d_sae=64, k=4)), 2: _identity_sae(d)}
    report = evaluate_saes(model, tokenizer, saes, _batches(tokenizer, 1))
    path = write_val_report(report, tmp_path / "val_report.json", model="tiny:llama")
    data = json.loads(path.read_text())
    assert set(data) == {"0", "2"} and data["2"]["model"] == "tiny:llama"
    for key in ("var_expl", "l0", "alive", "dead_pct"):
        assert key in data["0"]
    assert 0 <= data["0"]["alive"] <= 64 and data["0"]["l0"] <= 4 + 1e-6
    assert "L0:" in summarize(report)


def test_empty_validation_data_is_a_clear_error(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="no token batches"):
        evaluate_saes(model, tokenizer, {0: _identity_sae(d_model(model))}, [])


def test_report_does_not_depend_on_forward_batch_or_chunk_size(tiny):
    model, tokenizer = tiny
    d = d_model(model)
    sae = build_sae(SAEConfig(d_in=d, d_sae=64, k=4))
    batches = _batches(tokenizer, 2)
    one = evaluate_saes(model, tokenizer, {1: sae}, batches, forward_batch_size=1)["1"]
    four = evaluate_saes(model, tokenizer, {1: sae}, batches, forward_batch_size=4)["1"]
    for key in ("var_expl", "l0", "ce_loss_clean", "ce_loss_spliced", "ce_loss_zero_ablation", "kl_div_spliced"):
        assert one[key] == pytest.approx(four[key], rel=1e-4, abs=1e-6), key
    logits = torch.randn(2, 9, 50)
    ids = torch.randint(0, 50, (2, 9))
    keep = torch.ones(2, 9, dtype=torch.bool)
    from shared.evaluate import next_token_sums
    whole = next_token_sums(logits, ids, keep, reference=logits.flip(0), chunk=100)
    parts = next_token_sums(logits, ids, keep, reference=logits.flip(0), chunk=3)
    assert whole[0] == pytest.approx(parts[0]) and whole[1] == pytest.approx(parts[1]) and whole[2] == 16
