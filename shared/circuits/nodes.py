"""Circuit nodes on plain transformers models: attention heads, MLP outputs, query/key inputs of heads, and
the latents and error term of residual SAEs spliced in exactly (x = x̂(f) + error).

A `Component` is one tensor of a forward that holds nodes: "heads" (o_proj's input split by head),
"mlp" (an MLP's output, one node), "q" / "k" (a head's query / key projection, before norm and rotary),
"latents" (an SAE's latents at a block output) and "error" (that SAE's x − x̂, one node). Every component
is seen as [B, T, N, E] (N nodes of E numbers each), so patching, attribution and IG treat them alike.
`Nodes.hooked(edit)` runs a forward in which edit(component, value) may replace each value; node ids
read "L3.h2", "L3.h2.q", "L3.h0.k" (a key/value head), "L3.mlp", "L8.f2503", "L8.error".
"""
from __future__ import annotations

import re
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from ..model import hooks, layout
from ..model.layout import d_model, decoder_layers, model_device, text_config
from ..saes.releases import sae_layer_from_id

KINDS = ("heads", "q", "k", "mlp", "latents", "error")
_ATTN_NAMES = ("self_attn", "attn", "attention", "linear_attn", "mixer")
_OUT_NAMES = ("o_proj", "c_proj", "out_proj", "dense")
_MLP_NAMES = ("mlp", "feed_forward", "block_sparse_moe")
_ID = re.compile(r"L(\d+)\.(?:h(\d+)(?:\.([qk]))?|(mlp)|f(\d+)|(error))")

Edit = Callable[["Component", torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Component:
    """One node-holding tensor of a forward: layer, kind (see KINDS) and its number of nodes n."""
    layer: int
    kind: str
    n: int

    def node_id(self, i: int) -> str:
        """The id of node i of this component."""
        return {"heads": f"L{self.layer}.h{i}", "q": f"L{self.layer}.h{i}.q", "k": f"L{self.layer}.h{i}.k",
                "mlp": f"L{self.layer}.mlp", "latents": f"L{self.layer}.f{i}", "error": f"L{self.layer}.error"}[self.kind]

    @property
    def node_kind(self) -> str:
        """The CircuitData kind of its nodes: head | q | k | mlp | feature | error."""
        return {"heads": "head", "latents": "feature"}.get(self.kind, self.kind)


# ----------------------------------------------------------------------------- the model's parts


def _child(module: nn.Module, names) -> tuple[str, nn.Module] | tuple[None, None]:
    for name in names:
        sub = getattr(module, name, None)
        if isinstance(sub, nn.Module):
            return name, sub
    return None, None


def _out_features(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else int(module.weight.shape[1])


def attention(model, layer: int) -> tuple[nn.Module, bool]:
    """(layer's attention module, whether it is softmax attention); linear attention (e.g. Gated-DeltaNet) is not."""
    block = decoder_layers(model)[layer]
    name, attn = _child(block, _ATTN_NAMES)
    if attn is None:
        raise ValueError(f"layer {layer} ({type(block).__name__}) has no attention module named one of {_ATTN_NAMES}")
    linear = name == "linear_attn" or any(w in type(attn).__name__.lower() for w in ("deltanet", "linear", "mamba"))
    return attn, not linear


def mlp_module(model, layer: int) -> nn.Module:
    """The MLP of block `layer` (its output is the "mlp" node)."""
    block = decoder_layers(model)[layer]
    _, mlp = _child(block, _MLP_NAMES)
    if mlp is None:
        raise ValueError(f"layer {layer} ({type(block).__name__}) has no MLP named one of {_MLP_NAMES}")
    return mlp


def _heads_site(model, layer: int) -> tuple[nn.Module, int]:
    """(the attention output projection, number of heads): heads are its input split in equal parts."""
    attn, softmax = attention(model, layer)
    _, out = _child(attn, _OUT_NAMES)
    if out is None:
        raise ValueError(f"layer {layer}'s attention ({type(attn).__name__}) has no output projection named one of {_OUT_NAMES}")
    cfg = text_config(model)
    if softmax:
        n = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head")
    else:
        n = getattr(cfg, "linear_num_value_heads", None) or getattr(cfg, "num_attention_heads")
    return out, int(n)


def _qk_site(model, layer: int, which: str):
    """(projection module, n heads, extract(out) -> [B,T,N,dh], insert(out, value) -> out) for q or k."""
    attn, softmax = attention(model, layer)
    if not softmax:
        raise ValueError(f"query/key nodes are not applicable at layer {layer}: {type(attn).__name__} is linear "
                         f"attention (no softmax); use heads/mlp nodes there")
    cfg = text_config(model)
    n_q = int(getattr(cfg, "num_attention_heads", None) or cfg.n_head)
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_q)
    dh = int(getattr(attn, "head_dim", None) or d_model(model) // n_q)
    n = n_q if which == "q" else n_kv
    if hasattr(attn, f"{which}_proj"):
        proj = getattr(attn, f"{which}_proj")
        start, step = 0, dh
        if which == "q" and _out_features(proj) == 2 * n * dh:  # a gated query: [q_h, gate_h] per head
            step = 2 * dh
    else:
        _, proj = _child(attn, ("c_attn", "qkv_proj", "query_key_value"))
        if proj is None:
            raise ValueError(f"layer {layer}'s attention ({type(attn).__name__}) has no q/k projection this code knows")
        start, step = (0 if which == "q" else n_q * dh), dh

    def extract(out: torch.Tensor) -> torch.Tensor:
        part = out[..., start:start + n * step].unflatten(-1, (n, step))
        return part[..., :dh]

    def insert(out: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        part = out[..., start:start + n * step].unflatten(-1, (n, step))
        part = torch.cat([value, part[..., dh:]], -1).flatten(-2) if step != dh else value.flatten(-2)
        return torch.cat([out[..., :start], part, out[..., start + n * step:]], -1)

    return proj, n, extract, insert


def softmax_layers(model) -> list[int]:
    """The layers whose attention is a softmax (where query/key nodes and the QK fix apply)."""
    return [layer for layer in range(layout.n_layers(model)) if attention(model, layer)[1]]


def check_sae_layer(sae_id: str, layer: int) -> int:
    """`layer` when the SAE id names that block output (or names none); else a one-line ValueError."""
    read = sae_layer_from_id(sae_id)
    if read is not None and read != layer:
        raise ValueError(f"SAE_ID {sae_id!r} reads the residual stream after block {read}, not layer {layer}: "
                         f"set LAYER = {read} or pick the SAE for layer {layer}")
    return layer


# ----------------------------------------------------------------------------- the node set


class Nodes:
    """The components of a model that hold nodes: heads / mlps / qk at the given layers, SAEs by layer.

    heads, mlps, qk: layer specs (layout.resolve_layers forms) or None; saes: {layer: SAE} for residual
    SAEs read at block `layer`'s output (an SAE whose d_in is not the model's width is refused). qk adds
    a "q" and a "k" component per layer (softmax attention only). centre_sae_input: the SAEs read
    x − mean(x) over d_model (saes.releases.centred_input); the error term keeps the splice exact either way.
    """

    def __init__(self, model, *, heads=None, mlps=None, qk=None, saes: dict | None = None,
                 centre_sae_input: bool = False):
        self.model = model
        self.centre_sae_input = centre_sae_input
        n_layers = layout.n_layers(model)
        head_layers, qk_layers, mlp_layers = (
            set() if spec is None else set(layout.resolve_layers(spec, n_layers, dedupe=True, name=name))
            for spec, name in ((heads, "heads"), (qk, "qk"), (mlps, "mlps")))
        self.saes = {}
        for layer, sae in (saes or {}).items():
            layer = layout.resolve_layers(int(layer), n_layers, name="SAE layer")[0]
            if sae.cfg.d_in != d_model(model):
                raise ValueError(f"the SAE for layer {layer} reads d_in={sae.cfg.d_in} but the model's residual "
                                 f"width is {d_model(model)}: load the SAE trained for this model")
            self.saes[layer] = sae
        comps: list[Component] = []
        self._sites: dict[Component, tuple] = {}
        for layer in range(n_layers):
            if layer in head_layers:
                module, n = _heads_site(model, layer)
                comps.append(self._add(Component(layer, "heads", n), ("input", module)))
            if layer in qk_layers:
                for which in ("q", "k"):
                    proj, n, extract, insert = _qk_site(model, layer, which)
                    comps.append(self._add(Component(layer, which, n), ("output", proj, extract, insert)))
            if layer in mlp_layers:
                comps.append(self._add(Component(layer, "mlp", 1), ("output", mlp_module(model, layer), None, None)))
            if layer in self.saes:
                comps.append(self._add(Component(layer, "latents", self.saes[layer].cfg.d_sae), ("sae",)))
                comps.append(self._add(Component(layer, "error", 1), ("sae",)))
        if not comps:
            raise ValueError("no nodes: give heads=, mlps=, qk= layers or saes={layer: sae}")
        self.components = comps
        self.ids = [c.node_id(i) for c in comps for i in range(c.n)]
        self._index = {c.node_id(i): (c, i) for c in comps for i in range(c.n)}

    def _add(self, comp: Component, site: tuple) -> Component:
        self._sites[comp] = site
        return comp

    def __len__(self) -> int:
        return len(self.ids)

    def locate(self, node_id: str) -> tuple[Component, int]:
        """(component, index) of a node id; a one-line error for an id this node set does not hold."""
        if node_id not in self._index:
            hint = "" if _ID.fullmatch(node_id or "") else " (ids read like L3.h2, L3.h2.q, L3.mlp, L8.f2503, L8.error)"
            raise ValueError(f"node {node_id!r} is not in this node set{hint}; e.g. {self.ids[:3]}")
        return self._index[node_id]

    def masks(self, node_ids) -> dict[Component, torch.Tensor]:
        """{component: bool [N]} of the nodes named (components with none are left out)."""
        out: dict[Component, torch.Tensor] = {}
        for node_id in node_ids:
            comp, i = self.locate(node_id)
            out.setdefault(comp, torch.zeros(comp.n, dtype=torch.bool))[i] = True
        return out

    def layer_of(self, node_id: str) -> int:
        return self.locate(node_id)[0].layer

    def kinds(self) -> dict[str, str]:
        """{node id: CircuitData kind} (head, q, k, mlp, feature, error)."""
        return {i: c.node_kind for i, (c, _) in self._index.items()}

    # ------------------------------------------------------------------------- the hooked forward

    @contextmanager
    def hooked(self, edit: Edit | None = None) -> Iterator[dict[Component, torch.Tensor]]:
        """Within the block, every forward passes each component's value [B, T, N, E] through
        edit(component, value) (identity when None) and records what it returns (not detached, so
        gradients can be taken) in the yielded dict."""
        edit = edit or (lambda _c, v: v)
        record: dict[Component, torch.Tensor] = {}

        def apply(comp, value):
            if torch.is_grad_enabled() and not value.requires_grad:  # frozen weights: start the graph here
                value = value.detach().requires_grad_()
            new = edit(comp, value)
            if new.shape != value.shape:
                raise ValueError(f"an edit of {comp.kind} at layer {comp.layer} returned shape {tuple(new.shape)} for {tuple(value.shape)}")
            record[comp] = new
            return new

        inputs, outputs, sae_layers = self._sites_by_hook()

        def head_edit(comps):
            def fn(x):
                for comp in comps:
                    x = apply(comp, x.unflatten(-1, (comp.n, -1))).flatten(-2)
                return x
            return fn

        def out_edit(items):
            def fn(out):
                for comp, extract, insert in items:
                    if extract is None:  # one node: the whole output
                        out = apply(comp, out.unsqueeze(-2)).squeeze(-2)
                    else:
                        out = insert(out, apply(comp, extract(out)))
                return out
            return fn

        def sae_edit(layer, comps):
            sae = self.saes[layer]

            def fn(x):
                xs = x.to(sae.dtype)
                f = sae.encode(xs - xs.mean(-1, keepdim=True) if self.centre_sae_input else xs)
                err = xs - sae.decode(f)
                f = apply(comps["latents"], f.unsqueeze(-1)).squeeze(-1)
                err = apply(comps["error"], err.unsqueeze(-2)).squeeze(-2)
                return sae.decode(f) + err
            return fn

        with ExitStack() as stack:
            stack.enter_context(hooks.edit_module_inputs({m: head_edit(c) for m, c in inputs.items()}))
            stack.enter_context(hooks.edit_module_outputs({m: out_edit(c) for m, c in outputs.items()}))
            stack.enter_context(hooks.edit_residual(self.model, {layer: sae_edit(layer, c) for layer, c in sae_layers.items()}))
            yield record

    def _sites_by_hook(self) -> tuple[dict, dict, dict]:
        """The components grouped by where `hooked` edits them: {module: [components]} on a module's input (heads),
        {module: [(component, extract, insert)]} on its output, {layer: {"latents" | "error": component}} at an
        SAE's layer."""
        inputs: dict[nn.Module, list] = {}
        outputs: dict[nn.Module, list] = {}
        sae_layers: dict[int, dict] = {}
        for comp, site in self._sites.items():
            if site[0] == "input":
                inputs.setdefault(site[1], []).append(comp)
            elif site[0] == "output":
                outputs.setdefault(site[1], []).append((comp, site[2], site[3]))
            else:
                sae_layers.setdefault(comp.layer, {})[comp.kind] = comp
        return inputs, outputs, sae_layers

    def values(self, ids: torch.Tensor, edit: Edit | None = None, *, grad: bool = False):
        """(logits, {component: value}) of one forward on ids; values detached unless grad."""
        ctx = torch.enable_grad() if grad else torch.no_grad()
        with ctx, self.hooked(edit) as rec:
            logits = self.model(ids.to(model_device(self.model))).logits
        return logits, (dict(rec) if grad else {c: v.detach() for c, v in rec.items()})


@contextmanager
def eager_attention(model) -> Iterator[None]:
    """Within the block the model runs eager attention (whose weights are visible to hooks), then its own again."""
    cfg = getattr(model, "config", None)
    before = getattr(cfg, "_attn_implementation", None)
    if before in (None, "eager") or not hasattr(model, "set_attn_implementation"):
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)
