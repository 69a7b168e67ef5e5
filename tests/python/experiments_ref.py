"""Independent reference for punctum's causal experiments (SPEC §3): attention knockout,
residual patching and the logit lens, computed with Hugging Face transformers on the CPU.

How each experiment is reproduced in transformers (never by re-using punctum's shortcuts):

- The model is loaded with eager attention and converted to float64. Its attention is
  replaced by :func:`_attention`, registered as the transformers attention implementation
  ``punctum_ref`` together with transformers' own eager (additive, float) mask builder, so
  the causal mask and the sliding window (Mistral) are the ones transformers builds for the
  model. ``_attention`` is the eager attention of transformers computed in float64
  (transformers' eager Llama/Mistral/Qwen2 softmax is float32), plus the knockout.
- Attention knockout of key j over layers [lo, hi): in those layers only, an additive
  ``-inf`` on column j of every query row i > j of the mask transformers built (so a
  sliding window and the knockout combine), then a full forward of the whole sequence.
- Residual patching at (l, p): a forward pre-hook on decoder layer l replaces its input
  hidden state at position p with b's (captured the same way from b's clean run), then a
  full forward.
- Logit lens: the residual entering every decoder layer (forward pre-hooks; l = 0: the
  embeddings, incl. GPT-2's learned positions) and the final residual (pre-hook on the final
  norm, i.e. before it) are decoded through the model's own final norm and LM head.

Every log-softmax, KL and difference is computed in float64 from float64 logits.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import torch

from tiny_models import load_hf

IMPL = "punctum_ref"

# knockout currently applied by _attention: (key position j, lo, hi) or None
_KNOCKOUT: list = [None]


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' eager attention in float64, with the knockout of _KNOCKOUT[0]."""
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    groups = query.shape[1] // key.shape[1]
    k = key.double().repeat_interleave(groups, dim=1)
    v = value.double().repeat_interleave(groups, dim=1)
    scores = torch.matmul(query.double(), k.transpose(-1, -2)) * scaling
    softcap = kwargs.get("softcap")
    if softcap:  # Gemma 2: before the mask, as transformers' eager attention
        scores = torch.tanh(scores / softcap) * softcap
    T_q, T_k = scores.shape[-2], scores.shape[-1]
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask[..., :T_k], float("-inf"))
        else:
            scores = scores + attention_mask[..., :T_k].double()
    else:  # never expected: the mask interface is registered; keep the causal rule anyway
        causal = torch.ones(T_q, T_k, dtype=torch.bool).tril(T_k - T_q)
        scores = scores.masked_fill(~causal, float("-inf"))
    ko = _KNOCKOUT[0]
    if ko is not None:
        j, lo, hi = ko
        if lo <= module.layer_idx < hi:
            extra = torch.zeros(T_q, T_k, dtype=torch.float64)
            extra[j + 1:, j] = float("-inf")   # queries i > j lose key j; i <= j unchanged
            scores = scores + extra
    probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs, v).to(query.dtype).transpose(1, 2).contiguous()
    return out, probs


def _register():
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask
    AttentionInterface.register(IMPL, _attention)
    AttentionMaskInterface.register(IMPL, eager_mask)


def log_softmax64(logits: torch.Tensor) -> np.ndarray:
    return torch.log_softmax(logits.double(), dim=-1).numpy()


def kl(p_log: np.ndarray, q_log: np.ndarray) -> float:
    """KL(P||Q) in nats, float64."""
    p = np.exp(p_log)
    m = p > 0
    return float(np.sum(p[m] * (p_log[m] - q_log[m])))


@dataclasses.dataclass
class Clean:
    ids: tuple
    logp: np.ndarray        # [V] float64 log P at the final position
    resid: torch.Tensor     # [L+1, T, D] float64: residual entering layer l (L: before final norm)


class ExpRef:
    """One model directory, in float64, with the punctum_ref attention."""

    def __init__(self, model_dir: str):
        _register()
        self.model_dir = model_dir
        self.model = load_hf(model_dir).to(torch.float64)
        self.hf_eager_check()  # before switching: our attention must equal transformers' eager
        self.model.set_attn_implementation(IMPL)
        cfg = self.model.config
        self.model_type = cfg.model_type
        if self.model_type == "gpt2":
            self.layers, self.final_norm = self.model.transformer.h, self.model.transformer.ln_f
        else:
            self.layers, self.final_norm = self.model.model.layers, self.model.model.norm
        self.lm_head = self.model.get_output_embeddings()
        self.L = len(self.layers)
        self.V = cfg.vocab_size
        self._clean: dict[tuple, Clean] = {}
        self.self_check()

    # ---------------------------------------------------------------- forward passes
    @torch.no_grad()
    def _run(self, ids, knockout=None, patch=None, capture=False):
        """Full forward of `ids`. knockout: (j, lo, hi); patch: (layer, pos, vector [D]).
        Returns (logp at the final position, residuals [L+1, T, D] if capture)."""
        caps = [None] * (self.L + 1)
        hooks = []

        def pre(idx):
            def hook(_mod, args, kwargs):
                x = args[0] if args else kwargs["hidden_states"]
                if patch is not None and idx == patch[0]:
                    x = x.clone()
                    x[0, patch[1]] = patch[2]
                    if args:
                        args = (x,) + tuple(args[1:])
                    else:
                        kwargs = dict(kwargs, hidden_states=x)
                if capture:
                    caps[idx] = x[0].detach().clone()
                return args, kwargs
            return hook

        for l in range(self.L):
            hooks.append(self.layers[l].register_forward_pre_hook(pre(l), with_kwargs=True))
        hooks.append(self.final_norm.register_forward_pre_hook(pre(self.L), with_kwargs=True))
        _KNOCKOUT[0] = knockout
        try:
            x = torch.tensor([list(ids)], dtype=torch.long)
            out = self.model(input_ids=x, use_cache=False)
        finally:
            _KNOCKOUT[0] = None
            for h in hooks:
                h.remove()
        logp = log_softmax64(out.logits[0, -1])
        return logp, (torch.stack(caps) if capture else None)

    def clean(self, ids) -> Clean:
        key = tuple(int(t) for t in ids)
        if key not in self._clean:
            logp, resid = self._run(key, capture=True)
            self._clean[key] = Clean(key, logp, resid)
        return self._clean[key]

    def knockout(self, ids, j: int, lo: int, hi: int) -> np.ndarray:
        return self._run(ids, knockout=(j, lo, hi))[0]

    def patched(self, a_ids, b_ids, layer: int, pos: int) -> np.ndarray:
        vec = self.clean(b_ids).resid[layer, pos]
        return self._run(a_ids, patch=(layer, pos, vec))[0]

    @torch.no_grad()
    def lens(self, ids, pos: int) -> np.ndarray:
        """[L+1, V] float64 log-probs of the residual entering each layer at `pos`."""
        x = self.clean(ids).resid[:, pos, :]
        return log_softmax64(self.final_logits(self.lm_head(self.final_norm(x))))

    def final_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Final-logit soft-capping (Gemma 2), as the model applies it to its own logits."""
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    # ---------------------------------------------------------------- self checks
    @torch.no_grad()
    def hf_eager_check(self):
        """The float64 model with transformers' own eager attention vs with ours: equal up to
        transformers' float32 softmax."""
        ids = torch.arange(12).remainder(self.model.config.vocab_size)[None] + 1
        want = self.model(input_ids=ids, use_cache=False).logits
        self.model.set_attn_implementation(IMPL)
        got = self.model(input_ids=ids, use_cache=False).logits
        self.model.set_attn_implementation("eager")
        d = (want - got).abs().max().item()
        assert d < 1e-4, f"punctum_ref attention differs from transformers eager by {d}"

    @torch.no_grad()
    def self_check(self):
        """The hooks do what they claim: capture and re-injection are exact (patching a with
        its own residual, and knocking out a key in an empty window, change nothing), the lens
        at l = L of the final position is the model's own distribution, and the residual
        entering layer 0 is the embedding."""
        ids = [(7 * t + 3) % self.V for t in range(9)]
        c = self.clean(ids)
        lp_same = self._run(ids, patch=(1, 4, c.resid[1, 4]))[0]
        assert np.max(np.abs(lp_same - c.logp)) < 1e-12
        lp_noop = self.knockout(ids, 8, 0, self.L)   # j = T-1: no query i > j
        assert np.max(np.abs(lp_noop - c.logp)) < 1e-12
        lp_ko = self.knockout(ids, 0, 0, self.L)
        assert np.max(np.abs(lp_ko - c.logp)) > 1e-6, "knockout had no effect"
        lens = self.lens(ids, len(ids) - 1)
        assert np.max(np.abs(lens[self.L] - c.logp)) < 1e-9
        emb = self.model.get_input_embeddings()(torch.tensor(ids))
        if self.model_type == "gpt2":
            emb = emb + self.model.transformer.wpe(torch.arange(len(ids)))
        assert torch.max(torch.abs(emb - c.resid[0])).item() < 1e-12


# ---------------------------------------------------------------------------------------
# what the engine should compute: position sets, windows, expected rows
# ---------------------------------------------------------------------------------------

PUNCT_END = (".", ",", ";", ":", "!", "?", "\u2026", "\u3002", "\u3001")


def is_punct_piece(text: str) -> bool:
    """SPEC §3: decoded text, stripped of white space, ends with . , ; : ! ? … or a CJK full
    stop / comma, or contains a line break."""
    if "\n" in text:
        return True
    s = text.strip()
    return bool(s) and s.endswith(PUNCT_END)


def position_set(T: int, mode: str, rec_positions=None, include_final=False,
                 punct=None) -> list[int]:
    """SPEC §3 position sets. mode: all | punct | last:K | none; rec_positions overrides.
    include_final (lens) adds T-1; otherwise (knockout) T-1 is a no-op and left out."""
    if rec_positions is not None:
        s = {p for p in rec_positions if 0 <= p < T}
    elif mode == "all":
        s = set(range(T - 1))
    elif mode == "none":
        s = set()
    elif mode.startswith("last:"):
        k = int(mode[5:])
        s = set(range(max(0, T - 1 - k), T - 1))
    elif mode == "punct":
        s = {p for p in range(T) if punct[p]}
    else:
        raise ValueError(mode)
    s.discard(T - 1)
    if include_final:
        s.add(T - 1)
    return sorted(s)


def parse_windows(spec: str, L: int) -> list[tuple[int, int]]:
    if spec == "all":
        return [(0, L)]
    if spec == "each":
        return [(l, l + 1) for l in range(L)]
    return [tuple(int(x) for x in w.split(":")) for w in spec.split(",")]


@dataclasses.dataclass
class Seq:
    index: int           # row in /seqs
    pair: int
    side: int
    ids: list
    target: int | None
    positions: list | None


def record_ok(r: dict, vocab: int | None = None) -> bool:
    """The test records are valid except those with an id outside the vocabulary."""
    ids = list(r["a_ids"]) + list(r.get("b_ids", []))
    return vocab is None or all(0 <= t < vocab for t in ids)


def seqs_of(records: list[dict], vocab: int | None = None) -> list[Seq]:
    """/seqs rows of a file: a then b of every valid record, in order (a bad record, see
    record_ok, has none)."""
    out = []
    for p, r in enumerate(records):
        if not record_ok(r, vocab):
            continue
        for side, key in enumerate(("a_ids", "b_ids")):
            if key in r:
                out.append(Seq(len(out), p, side, list(r[key]), r.get("target_id"),
                               r.get("positions")))
    return out


def expected_knockout(ref: ExpRef, seqs: list[Seq], mode: str, windows, punct_of=None):
    """{(seq, pos, window): (kl, dlogp_top1, dlogp_target, top1_changed, top2_gap_q, gap_p)}"""
    rows = {}
    for s in seqs:
        c = ref.clean(s.ids)
        t1 = int(np.argmax(c.logp))
        punct = punct_of(s.ids) if punct_of else None
        for w, (lo, hi) in enumerate(windows):
            for j in position_set(len(s.ids), mode, s.positions, False, punct):
                q = ref.knockout(s.ids, j, lo, hi)
                srt = np.sort(q)
                rows[(s.index, j, w)] = dict(
                    kl=kl(c.logp, q),
                    dlogp_top1=q[t1] - c.logp[t1],
                    dlogp_target=(q[s.target] - c.logp[s.target]) if s.target is not None
                    else math.nan,
                    top1_changed=int(int(np.argmax(q)) != t1),
                    gap=float(srt[-1] - srt[-2]))
    return rows


def expected_patching(ref: ExpRef, records: list[dict], seqs: list[Seq]):
    """{(pair, layer, pos): (kl_to_b, kl_from_a, dlogp_top1_b)} for equal-length pairs."""
    rows = {}
    for p, r in enumerate(records):
        if "b_ids" not in r or len(r["a_ids"]) != len(r["b_ids"]) or not record_ok(r, ref.V):
            continue
        a, b = r["a_ids"], r["b_ids"]
        ca, cb = ref.clean(a), ref.clean(b)
        t1b = int(np.argmax(cb.logp))
        for l in range(ref.L):
            for pos in range(len(a)):
                q = ref.patched(a, b, l, pos)
                rows[(p, l, pos)] = dict(kl_to_b=kl(cb.logp, q), kl_from_a=kl(ca.logp, q),
                                         dlogp_top1_b=q[t1b] - ca.logp[t1b])
    return rows


def expected_lens(ref: ExpRef, seqs: list[Seq], mode: str, punct_of=None):
    """{(seq, pos): (logp_top1 [L+1], logp_target [L+1])}"""
    rows = {}
    for s in seqs:
        c = ref.clean(s.ids)
        t1 = int(np.argmax(c.logp))
        punct = punct_of(s.ids) if punct_of else None
        for pos in position_set(len(s.ids), mode, s.positions, True, punct):
            lp = ref.lens(s.ids, pos)
            tgt = lp[:, s.target] if s.target is not None else np.full(ref.L + 1, np.nan)
            rows[(s.index, pos)] = dict(logp_top1=lp[:, t1], logp_target=tgt)
    return rows


# ---------------------------------------------------------------------------------------
# comparison
# ---------------------------------------------------------------------------------------

RTOL = 1e-3          # every recorded number
ATOL_KL = 1e-6       # KL values (nats)
ATOL_LOGP = 1e-5     # log-probabilities and their differences (float32 logits of |x| ~ 10)
TOP1_TIE = 1e-5      # top1_changed may differ only where the reference's top-2 gap is below


def close(got, want, atol, rtol=RTOL):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    both_nan = np.isnan(got) & np.isnan(want)
    ok = both_nan | (np.abs(got - want) <= atol + rtol * np.abs(want))
    return bool(np.all(ok))


def write_pairs(path: str, records: list[dict]) -> None:
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def read_rows(h5, group: str, key_cols: list[str]) -> tuple[list, dict]:
    """(keys in file order, {column: array}) of a row group."""
    g = h5[group]
    cols = {k: g[k][()] for k in g.keys()}
    n = len(cols[key_cols[0]])
    keys = [tuple(int(cols[k][i]) for k in key_cols) for i in range(n)]
    return keys, cols


def compare_rows(name: str, keys: list, cols: dict, want: dict, specs: dict) -> list[str]:
    """Compare engine rows with expected ones by key. specs: column -> atol (None: exact).
    Returns a list of mismatch descriptions (empty: all agree)."""
    errs = []
    if len(keys) != len(set(keys)):
        errs.append(f"{name}: duplicate rows")
    missing = sorted(set(want) - set(keys))
    extra = sorted(set(keys) - set(want))
    if missing:
        errs.append(f"{name}: {len(missing)} expected rows missing, e.g. {missing[:5]}")
    if extra:
        errs.append(f"{name}: {len(extra)} unexpected rows, e.g. {extra[:5]}")
    for i, k in enumerate(keys):
        if k not in want:
            continue
        w = want[k]
        for col, atol in specs.items():
            g = cols[col][i]
            e = w[col]
            if atol is None:
                if int(g) != int(e):
                    if col == "top1_changed" and w.get("gap", 1.0) < TOP1_TIE:
                        continue  # a tie in the knocked-out distribution: either answer
                    errs.append(f"{name} {k} {col}: got {int(g)} want {int(e)}"
                                + (f" (top-2 gap {w['gap']:.3g})" if "gap" in w else ""))
            elif not close(g, e, atol):
                g64 = np.asarray(g, dtype=np.float64)
                e64 = np.asarray(e, dtype=np.float64)
                errs.append(f"{name} {k} {col}: got {np.array2string(g64, precision=8)} "
                            f"want {np.array2string(e64, precision=8)} "
                            f"(max |d| {np.nanmax(np.abs(g64 - e64)):.3g})")
    return errs
