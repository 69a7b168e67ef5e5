"""The report's statement of findings and its literature sections (sinks, massive
activations, punctuation vs other tokens), drawn from punctum.literature.

Which sequences are which: records whose id starts with ``sink-natural-`` are the natural
text of the sink measurement, ``sink-repeat-`` the repeated-token control
(examples/literature.jsonl follows this). Without ``sink-natural-`` records, the sink
share is measured on every sequence but the control. The census of massive activations
and the punctuation comparison leave the control out (a repeated token is neither
punctuation nor text).
"""
from __future__ import annotations

import numpy as np

from . import literature as lit
from .report import (ACCENT, BLUE, DARK, GREEN, GREY, _esc, _figure, _fmt, _intx, _logfmt,
                     _missing, _png, _section, _table, _ylog)

ATTN_TOKEN_LIMIT = 200_000       # token rows read for the attention comparison
MASSIVE_TOKEN_LIMIT = 2_000_000  # token rows read for the census (3 × (L+1) values each)
PURPLE = "#7048e8"
KIND_COLORS = {"first": GREY, "first_delim": PURPLE, "other_punct": ACCENT, "other": BLUE}


def _not_control(pid):
    return not pid.startswith(lit.REPEAT_PREFIX)


def _pct(x):
    return "–" if x is None or not np.isfinite(x) else f"{100 * x:.1f} %"


def _ci_pct(lo, hi):
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return ""
    return f"[{100 * lo:.1f}–{100 * hi:.1f} %]"


def _num_ci(est, lo, hi, digits=3):
    if not np.isfinite(est):
        return "–"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return _fmt(est, digits)
    return f"{_fmt(est, digits)} [{_fmt(lo, digits)}, {_fmt(hi, digits)}]"


# ------------------------------------------------------------------------------ compute

def compute(f, ctx):
    """Run the three measurements once; results (or why not) go into ctx['lit']."""
    out = {}
    if f.has("attn_mass"):
        nat = lit.sink_share(f, select=lit.NATURAL_PREFIX)
        out["nat_label"] = "natural text (sink-natural-*)"
        if nat.n_seqs == 0:
            nat = lit.sink_share(f, select=_not_control)
            out["nat_label"] = "all sequences (no sink-natural-* records)"
        out["natural"] = nat if nat.n_seqs else None
        rep = lit.sink_share(f, select=lit.REPEAT_PREFIX)
        out["repeat"] = rep if rep.n_seqs else None
    else:
        out["sink_why"] = "the sweep was run without mass in --stats."
    if f.has("massive"):
        out["census"] = lit.massive_census(f, select=_not_control,
                                           max_tokens=MASSIVE_TOKEN_LIMIT)
    else:
        out["census_why"] = ("the sweep did not record the stat massive (resid_max, "
                             "resid_argmax, resid_median; SPEC §3): add massive to --stats.")
    has_ko = f.has("knockout") and f.counts()["knockout"] > 0
    if has_ko or f.has("attn_mass"):
        out["punct"] = lit.punct_vs_other(f, select=_not_control, max_tokens=ATTN_TOKEN_LIMIT)
    out["capped_attn"] = f.n_tokens > ATTN_TOKEN_LIMIT
    out["capped_massive"] = f.n_tokens > MASSIVE_TOKEN_LIMIT
    ctx["lit"] = out
    return out


# ------------------------------------------------------------------------------ findings

def _sink_sentence(nat, rep, L, H):
    ref = lit.PUBLISHED["sink"]["value"]
    s = (f"<b>Attention sinks.</b> On {nat.length} of natural text ({nat.n_seqs} sequences), "
         f"{_pct(nat.share)} {_ci_pct(*nat.ci)} of the {L * H} heads put α<sub>0</sub> > "
         f"{nat.eps:g} on the first token (Gu et al.: {_esc(ref)})")
    if rep is None:
        return s + "; the sweep has no repeated-token control (sink-repeat-* records)."
    lo_n = nat.ci[0]
    if rep.ci[1] < 0.05:
        verdict = "none or almost none, as Gu et al. found for models with rotary positions"
    elif rep.ci[1] < lo_n:
        verdict = "fewer than on natural text, but not the published 0 %"
    else:
        verdict = "not fewer than on natural text, unlike the published 0 %"
    return s + (f"; on the repeated-token control ({rep.length}, {rep.n_seqs} sequences), "
                f"{_pct(rep.share)} {_ci_pct(*rep.ci)}: {verdict}.")


def _massive_sentence(c):
    k = c.kinds
    first, delim = k.loc["first"], k.loc["first_delim"]
    op, ot = k.loc["other_punct"], k.loc["other"]
    crit = f"|h| > {c.threshold:g} and ≥ {c.ratio:g} × the median |h| of its residual"
    if not k["carriers"].sum():
        big = k["max_abs"].idxmax() if k["max_abs"].notna().any() else None
        s = f"<b>Massive activations</b> ({crit}): none in this sweep"
        if big is None:
            return s + "."
        b = k.loc[big]
        s += (f". The largest |h| is {_fmt(b['max_abs'], 3)}, at the {_esc(b['label'])} "
              f"(dimension {int(b['dim_of_max'])}, layer {int(b['layer_of_max'])}), and "
              f"there at most {_fmt(b['max_ratio'], 3)} × the median of its residual")
        if b["max_abs"] > c.threshold and b["max_ratio"] >= c.ratio / 10:
            return s + (": outliers of the kind Sun et al. describe, but below their "
                        f"{c.ratio:g}× criterion.")
        return s + ": unlike Sun et al., no massive activations."
    s = (f"<b>Massive activations</b> ({crit}) occur in {_pct(first['share'])} "
         f"{_ci_pct(first['ci_lo'], first['ci_hi'])} of first tokens and "
         f"{_pct(delim['share'])} {_ci_pct(delim['ci_lo'], delim['ci_hi'])} of first "
         f"delimiters, against {_pct(op['share'])} of other punctuation and "
         f"{_pct(ot['share'])} of other tokens")
    peak = np.nanmax(k["peak"].to_numpy(np.float64))
    dims = list(dict.fromkeys(list(first["dims"]) + list(delim["dims"])))[:3]
    s += f"; the largest is {_fmt(peak, 3)}"
    if dims:
        s += f", mostly in dimension{'s' if len(dims) > 1 else ''} " + \
            ", ".join(str(d) for d in dims)
    if first["layers"]:
        s += f", in layers {first['layers']} at the first token"
    if first["share"] >= 0.5 and delim["share"] >= 0.5 and \
            max(op["share"], ot["share"]) < 0.05:
        verdict = "the pattern Sun et al. found"
    elif first["share"] >= 0.5:
        verdict = "at the first token as Sun et al. found, but not the rest of their pattern"
    else:
        verdict = "not the pattern Sun et al. found"
    return s + f": {verdict}."


def _row_ci(t, g):
    return _num_ci(t.loc[g, "mean"], t.loc[g, "ci_lo"], t.loc[g, "ci_hi"])


def _ratio_word(r):
    est, lo, hi = r
    if not np.isfinite(lo):
        return "no interval"
    if lo > 1:
        return "punctuation weighs more"
    if hi < 1:
        return "punctuation weighs less"
    return "no clear difference"


def _punct_sentence(pv):
    parts = []
    if pv.knockout is not None and pv.knockout_ratio is not None:
        k = pv.knockout
        parts.append(
            f"knocking out a punctuation token moves the next-token distribution by "
            f"{_row_ci(k, 'punct')} nats (mean KL, layers [{pv.window[0]}, {pv.window[1]})), "
            f"other tokens by {_row_ci(k, 'other')}: ratio {_num_ci(*pv.knockout_ratio)}, "
            f"{_ratio_word(pv.knockout_ratio)}")
    if pv.attention is not None and pv.attention_ratio is not None:
        a = pv.attention
        parts.append(
            f"punctuation receives {_row_ci(a, 'punct')} of the attention per query (α, "
            f"mean over layers and heads), other tokens {_row_ci(a, 'other')}: ratio "
            f"{_num_ci(*pv.attention_ratio)}, {_ratio_word(pv.attention_ratio)}")
    if not parts:
        return None
    return ("<b>Punctuation vs other tokens</b> (first and final positions left out): "
            + "; ".join(parts) + ".")


def findings(f, ctx):
    """The Findings section: one sentence per phenomenon, and the table."""
    r = ctx.get("lit") or compute(f, ctx)
    L, H = f.n_layers, f.n_heads
    sent, rows = [], []
    src = lambda k: _esc(lit.PUBLISHED[k]["source"])  # noqa: E731
    pub = lambda k: _esc(lit.PUBLISHED[k]["value"])  # noqa: E731
    nat, rep = r.get("natural"), r.get("repeat")
    if nat is not None:
        sent.append(_sink_sentence(nat, rep, L, H))
        for key, res, label in (("sink", nat, f"Sink share, {r['nat_label']}"),
                                ("sink_repeat", rep, "Sink share, repeated-token control")):
            cell = (f"{_pct(res.share)} {_ci_pct(*res.ci)}<div class='dim'>{res.n_seqs} seqs, "
                    f"{_esc(res.length)}</div>") if res is not None else "not in this sweep"
            rows.append([f"{_esc(label)} (α<sub>0</sub> > {lit.SINK_EPS:g})", cell, pub(key),
                         src(key)])
    else:
        why = r.get("sink_why", "no sequence with attention statistics.")
        rows.append(["Sink share", f"not measured: {_esc(why)}", pub("sink"), src("sink")])
    c = r.get("census")
    if c is not None:
        sent.append(_massive_sentence(c))
        for key, kind in (("massive_first", "first"), ("massive_delim", "first_delim")):
            k = c.kinds.loc[kind]
            rows.append([f"Massive activations, {lit.KIND_LABELS[kind]}",
                         f"{_pct(k['share'])} {_ci_pct(k['ci_lo'], k['ci_hi'])} of "
                         f"{int(k['tokens']):,}<div class='dim'>largest |h| "
                         f"{_fmt(k['max_abs'], 3)} (≤ {_fmt(k['max_ratio'], 3)} × median)"
                         f"{', layers ' + k['layers'] if k['layers'] else ''}</div>",
                         pub(key), src(key)])
        op, ot = c.kinds.loc["other_punct"], c.kinds.loc["other"]
        rows.append(["Massive activations, other tokens",
                     f"punctuation {_pct(op['share'])} {_ci_pct(op['ci_lo'], op['ci_hi'])}, "
                     f"rest {_pct(ot['share'])} {_ci_pct(ot['ci_lo'], ot['ci_hi'])}",
                     pub("massive_other"), src("massive_other")])
    else:
        rows.append(["Massive activations", f"not measured: {_esc(r['census_why'])}",
                     pub("massive_first"), src("massive_first")])
    pv = r.get("punct")
    ps = _punct_sentence(pv) if pv is not None else None
    if ps:
        sent.append(ps)
    if pv is not None and pv.knockout_ratio is not None:
        rows.append([f"Knockout KL, punctuation / other (layers [{pv.window[0]}, "
                     f"{pv.window[1]}))", _num_ci(*pv.knockout_ratio), pub("punct"),
                     src("punct")])
    else:
        rows.append(["Knockout KL, punctuation / other",
                     "not measured: the sweep was run without --ablate knockout "
                     "(or knocked out only one kind of token)", pub("punct"), src("punct")])
    if pv is not None and pv.attention_ratio is not None:
        rows.append(["Attention received α, punctuation / other", _num_ci(*pv.attention_ratio),
                     "–", "–"])
    body = "".join(f"<p class='finding'>{s}</p>" for s in sent) or \
        "<p class='dim'>Nothing to state: the sweep holds none of the statistics needed.</p>"
    table = _table(["metric", "this sweep", "published", "source"], rows, "findings")
    lead = ("What this sweep shows about three published phenomena, with 95 % bootstrap "
            "intervals over pairs (seeded; see punctum.literature).")
    return _section("findings", "Findings", lead, body + table)


# ------------------------------------------------------------------------------ sections

def sinks(f, ctx):
    r = ctx["lit"]
    nat, rep = r.get("natural"), r.get("repeat")
    if nat is None:
        return _missing("sinks", "No attention-sink measurement",
                        r.get("sink_why", "no sequence with attention statistics."))
    fig = _figure(10.5, 3.4)
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[1.7, 1])
    sets = [("natural", nat, BLUE)] + ([("repeated token", rep, ACCENT)] if rep else [])
    x = np.arange(len(nat.per_layer))
    for name, res, col in sets:
        ax1.plot(x, 100 * res.per_layer, marker="o", ms=3.5, lw=1.8, color=col,
                 label=f"{name} ({res.n_seqs} seqs, {res.length})")
        ax1.fill_between(x, 100 * res.per_layer_ci[:, 0], 100 * res.per_layer_ci[:, 1],
                         color=col, alpha=0.15, lw=0)
    ax1.set_ylim(-3, 103)
    ax1.set_xlabel("layer")
    ax1.set_ylabel(f"% of heads with α₀ > {nat.eps:g}")
    ax1.set_title("Sink share per layer (95 % interval)")
    _intx(ax1)
    ax1.legend(fontsize=8.5)
    rng = np.random.default_rng(0)
    for k, (name, res, col) in enumerate(sets):
        v = 100 * res.per_seq["share"].to_numpy()
        ax2.scatter(k + rng.uniform(-0.18, 0.18, len(v)), v, s=12, color=col, alpha=0.6,
                    edgecolors="none")
        ax2.errorbar([k], [100 * res.share], yerr=[[100 * (res.share - res.ci[0])],
                                                   [100 * (res.ci[1] - res.share)]],
                     fmt="D", color=DARK, ms=5, capsize=4)
    ax2.set_xticks(range(len(sets)))
    ax2.set_xticklabels([s[0] for s in sets])
    ax2.set_xlim(-0.6, len(sets) - 0.4)
    ax2.set_ylim(-3, 103)
    ax2.set_ylabel("% of all heads, per sequence")
    ax2.set_title("Per sequence, and the mean")
    img = _png(fig, "sink share per layer, natural text vs repeated-token control")
    rows = []
    for name, res, _ in sets:
        rows.append([_esc(name), f"{res.n_seqs:,}", _esc(res.length),
                     f"{_pct(res.share)} {_ci_pct(*res.ci)}",
                     _fmt(float(np.mean(res.alpha0[:, :]))) if res.n_seqs else "–"])
    tab = _table(["sequences", "n", "length", "sink share [95 %]", "mean α₀"], rows,
                 "narrow num")
    lead = ("Gu et al. (ICLR 2025): per head, α<sub>0</sub> = attn_mass[0] / T is the "
            "average attention the first token receives per query; a head sinks when "
            f"α<sub>0</sub> > {nat.eps:g}. Published at T = 64: LLaMA-3-8B ≈ 99 %, GPT-2-XL "
            "≈ 77 %, and 0 % on a repeated token for models with rotary positions. The "
            "natural text is " + _esc(r["nat_label"]) + "; the control repeats one token "
            "(sink-repeat-*). Short sequences inflate the share (a uniform head has "
            "α<sub>0</sub> > 0.3 for T < 10).")
    return _section("sinks", "Attention sinks", lead, img + tab)


def _log_panel(ax, c, col_mean, col_sd, col_max, line, line_label, ylabel, title):
    """One panel of the census: per kind, a geometric mean by layer with a ± 1 geometric
    s.d. band and the max dashed; a horizontal criterion line; log y."""
    bl = c.by_layer
    x = np.arange(c.n_layers)
    ys = [np.array([line])]
    for kind in lit.KINDS:
        d = bl.loc[kind]
        n = int(d["tokens"].iloc[0])
        if not n:
            continue
        col = KIND_COLORS[kind]
        gm = d[col_mean].to_numpy()
        ax.plot(x, gm, marker="o", ms=3, lw=1.8, color=col,
                label=f"{lit.KIND_LABELS[kind]} (n={n:,})")
        if col_sd:
            gs = d[col_sd].to_numpy()
            ax.fill_between(x, gm / gs, gm * gs, color=col, alpha=0.12, lw=0)
            ys.append(gm / gs)
        ax.plot(x, d[col_max].to_numpy(), lw=0.9, ls="--", color=col, alpha=0.8)
        ys += [gm, d[col_max].to_numpy()]
    ax.axhline(line, color=GREEN, lw=1.1, ls="-.", label=line_label)
    ax.set_yscale("log")
    v = np.concatenate([np.ravel(y) for y in ys])
    v = v[np.isfinite(v) & (v > 0)]
    if len(v):
        ax.set_ylim(v.min() / 1.5, v.max() * 1.5)
    _logfmt(ax, "y")
    _intx(ax)
    ax.set_xlabel(f"residual entering layer l ({c.n_layers - 1}: final, before the norm)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)


def massive(f, ctx):
    r = ctx["lit"]
    c = r.get("census")
    if c is None:
        return _missing("massive", "No massive-activation census", r["census_why"])
    fig = _figure(11.0, 3.8)
    ax1, ax2 = fig.subplots(1, 2)
    _log_panel(ax1, c, "gmean", "gsd", "max", c.threshold, f"|h| = {c.threshold:g}",
               "largest |h_d| of the residual", "Largest |h| (geometric mean; dashed: max)")
    _log_panel(ax2, c, "ratio_gmean", None, "ratio_max", c.ratio, f"{c.ratio:g} × median",
               "largest |h_d| / median |h_d|", "Largest |h| over the median of its residual")
    ax1.legend(fontsize=7.5, loc="best")
    img = _png(fig, "massive activations by layer and token kind, log scale")
    rows = []
    for kind in lit.KINDS:
        k = c.kinds.loc[kind]
        where = (f" <span class='dim'>d {int(k['dim_of_max'])}, l {int(k['layer_of_max'])}"
                 "</span>") if k["dim_of_max"] >= 0 else ""
        rows.append([_esc(k["label"]), f"{int(k['tokens']):,}", f"{int(k['carriers']):,}",
                     f"{_pct(k['share'])} {_ci_pct(k['ci_lo'], k['ci_hi'])}",
                     _esc(k["layers"]) or "–", ", ".join(str(d) for d in k["dims"]) or "–",
                     _fmt(k["max_abs"], 4) + where, _fmt(k["max_ratio"], 4)])
    tab = _table(["token kind", "tokens", "with a massive act.", "share [95 %]",
                  "layers (≥ half massive)", "dimensions", "largest |h|", "largest ratio"],
                 rows, "num")
    top = ""
    if len(c.top):
        trows = [[_fmt(t.value, 4), str(t.dim), str(t.layer), _esc(lit.KIND_LABELS[t.kind]),
                  f"<code class='tok{' p' if t.kind != 'other' else ''}'>"
                  f"{_esc(str(t.text)).replace(chr(10), '↵')}</code>",
                  f"<code>{_esc(t.pair_id)}</code> {t.side}:{t.pos}"]
                 for t in c.top.head(10).itertuples()]
        top = "<h3>The largest massive activations</h3>" + _table(
            ["|h|", "dim", "layer", "kind", "token", "sequence"], trows, "narrow num")
    cap = (f" Over the first {MASSIVE_TOKEN_LIMIT:,} token rows of the file."
           if r.get("capped_massive") else "")
    lead = ("Sun et al. (COLM 2024): single residual dimensions with |h<sub>d</sub>| > "
            f"{c.threshold:g} and ≥ {c.ratio:g} × the median |h<sub>d</sub>| of that "
            "residual, from an early layer on, at the first token and the first \".\" or "
            "line break. Per token kind (the repeated-token control left out); a dashed "
            "line is the kind's largest value, the dash-dotted green line the criterion."
            + cap)
    return _section("massive", "Massive activations", lead,
                    "<p class='finding'>" + _massive_sentence(c) + "</p>" + img + tab + top)


def punct(f, ctx):
    r = ctx["lit"]
    pv = r.get("punct")
    if pv is None:
        return _missing("punct", "No punctuation comparison",
                        "the sweep has neither knockout rows nor attention statistics.")
    ko, at = pv.knockout, pv.attention
    panels = [p for p, have in (("ko", ko is not None), ("at", at is not None),
                                ("layer", pv.attention_by_layer is not None)) if have]
    fig = _figure(10.5, 3.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    groups = [("punct", "punctuation", ACCENT), ("other", "other", BLUE)]
    for ax, panel in zip(axes, panels):
        if panel in ("ko", "at"):
            t = ko if panel == "ko" else at
            for i, (g, lab, col) in enumerate(groups):
                m, lo, hi = t.loc[g, "mean"], t.loc[g, "ci_lo"], t.loc[g, "ci_hi"]
                if not np.isfinite(m):
                    continue
                err = [[max(m - lo, 0)], [max(hi - m, 0)]] if np.isfinite(lo) else None
                ax.bar([i], [m], 0.6, color=col, alpha=0.9, yerr=err, capsize=5)
            ax.set_xticks(range(len(groups)))
            ax.set_xticklabels([g[1] for g in groups])
            if panel == "ko":
                ax.set_ylabel("mean KL(P ‖ Q)  [nats]")
                ax.set_title(f"Knockout, layers [{pv.window[0]}, {pv.window[1]})")
            else:
                ax.set_ylabel("mean α (attention per query)")
                ax.set_title("Attention received")
        else:
            bl = pv.attention_by_layer
            ys = []
            for g, lab, col in groups + [("first", "first token", GREY)]:
                y = bl[g].to_numpy()
                if np.isfinite(y).any():
                    ys.append(y)
                    ax.plot(bl.index, y, marker="o", ms=3, lw=1.6, color=col, label=lab)
            _ylog(ax, ys)
            _intx(ax)
            ax.set_xlabel("layer")
            ax.set_ylabel("mean α")
            ax.set_title("Attention received, by layer")
            ax.legend(fontsize=8)
    img = _png(fig, "punctuation vs other tokens: knockout effect and attention received")
    rows = []
    for g, lab in (("punct", "punctuation"), ("other", "other tokens"),
                   ("first", "first token (apart)")):
        cells = [lab]
        if ko is not None:
            k = ko.loc[g]
            cells += [f"{int(k['rows']):,}", _num_ci(k["mean"], k["ci_lo"], k["ci_hi"]),
                      _pct(k["top1_changed"])]
        if at is not None:
            a = at.loc[g]
            cells += [f"{int(a['tokens']):,}", _num_ci(a["mean"], a["ci_lo"], a["ci_hi"]),
                      _fmt(a["mean_pos"], 3)]
        rows.append(cells)
    head = ["tokens"]
    if ko is not None:
        head += ["knockouts", "mean KL [95 %]", "top-1 changed"]
    if at is not None:
        head += ["tokens", "mean α [95 %]", "mean position"]
    tab = _table(head, rows, "num")
    notes = []
    if ko is None:
        notes.append("No knockout rows: the sweep was run without --ablate knockout.")
    elif not (ko.loc["punct", "rows"] and ko.loc["other", "rows"]):
        notes.append("Only one kind of token was knocked out (the sweep's --positions set): "
                     "run with --positions all to compare.")
    if at is None:
        notes.append("No attention statistics: the sweep was run without mass in --stats.")
    elif r.get("capped_attn"):
        notes.append(f"Attention over the first {ATTN_TOKEN_LIMIT:,} token rows.")
    lead = ("Do punctuation tokens matter more than other tokens (LLM-Microscope, Razzhigaev "
            "et al. 2025)? The knockout effect of each token on the final prediction, and the "
            "attention it receives per query, α<sub>j</sub> = attn_mass[j] / (T − j) averaged "
            "over layers and heads (Gu et al.'s normalisation: early and late positions "
            "comparable). The first token (the sink) is shown apart and the final position "
            "left out; the repeated-token control is left out.")
    return _section("punct", "Punctuation vs other tokens", lead,
                    img + tab + "".join(f"<p class='dim'>{_esc(n)}</p>" for n in notes))
