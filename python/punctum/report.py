"""A self-contained HTML report of one punctum sweep.

    python -m punctum report sweep.h5 --out report.html

One file, no network access: CSS inline, figures as base64 PNGs drawn by matplotlib
(Agg, no display needed). Sections (each an element with that id): findings, summary,
sinks, massive, punct, kl, attention, knockout, lens, patching, gen ("What the model goes on
to say": continuations side by side, gen_diverge / gen_kl_ab, target hit rates by patched
layer). A section whose statistics
the file does not hold is replaced by one line saying why. Every aggregate is computed in
slices, so the report of a file with millions of pairs needs no more memory than one
slice.

The report opens with "Findings" (punctum/_findings.py): one sentence per published
phenomenon (attention sinks, massive activations, punctuation vs other tokens) with its
number and bootstrap interval, and a table setting each beside the published value; the
sections sinks, massive and punct follow with their plots.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import os
import re

import numpy as np
import pandas as pd

from . import __version__
from .reader import CHUNK, PunctumFile

ACCENT = "#e8590c"   # punctuation
BLUE = "#1c7ed6"     # other tokens / side a
GREY = "#868e96"
GREEN = "#2b8a3e"    # final position
DARK = "#212529"

ATTN_TOKEN_LIMIT = 200_000   # tokens read for the file-wide attention profile
KO_MAX_DIST = 32             # knockout-by-position plot: distances 1..KO_MAX_DIST


# ------------------------------------------------------------------------------ helpers

def _esc(s):
    return html.escape("" if s is None else str(s), quote=True)


def _fmt(x, digits=4):
    if x is None:
        return "–"
    try:
        if pd.isna(x):
            return "–"
    except (TypeError, ValueError):
        pass
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    x = float(x)
    if x == 0:
        return "0"
    if abs(x) >= 1000 or abs(x) < 1e-3:
        return f"{x:.{max(digits - 1, 1)}e}"
    return f"{x:.{digits}g}"


def _visible(text, limit=None):
    """Prompt text as HTML with line breaks and trailing spaces made visible."""
    t = "" if text is None or (isinstance(text, float) and np.isnan(text)) else str(text)
    if limit and len(t) > limit:
        t = "…" + t[-limit:]
    out = _esc(t).replace("\n", '<span class="ws">↵</span><br>')
    out = re.sub(r" $", '<span class="ws">␣</span>', out)
    return out


def _tok_html(piece):
    """One token's text with white space made visible (␣ space, ↵ line break)."""
    t = "" if piece is None else str(piece)
    out = _esc(t).replace("\n", "↵").replace("\t", "⇥").replace(" ", "␣")
    return out or "∅"


def _diff_html(a, b, limit=160):
    """Prompts a and b with the part after their common prefix highlighted."""
    a = "" if a is None or (isinstance(a, float) and np.isnan(a)) else str(a)
    b = "" if b is None or (isinstance(b, float) and np.isnan(b)) else str(b)
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1

    def one(s):
        pre, suf = s[:k], s[k:]
        if limit and len(pre) > limit:
            pre = "…" + pre[-limit:]
        return _visible(pre) + (f"<mark>{_visible(suf)}</mark>" if suf else "")

    return one(a), one(b)


class _Glyphs:
    """Which characters the label fonts can draw (others become ▯ in token labels)."""

    FALLBACK = ("Noto Sans Mono CJK JP", "Noto Sans CJK JP", "Noto Sans CJK SC",
                "WenQuanYi Zen Hei", "Droid Sans Fallback", "Noto Sans")

    def __init__(self):
        self.ok = None
        self.family = ["monospace"]

    def _load(self):
        self.ok = set(range(32, 127))
        try:
            from matplotlib import font_manager, ft2font

            names = {f.name: f.fname for f in font_manager.fontManager.ttflist}
            paths = [font_manager.findfont(font_manager.FontProperties(family=["monospace"]))]
            extra = [n for n in self.FALLBACK if n in names]
            paths += [names[n] for n in extra]
            self.family = ["monospace"] + extra
            for p in paths:
                try:
                    self.ok |= set(ft2font.FT2Font(p).get_charmap().keys())
                except (OSError, RuntimeError):
                    pass
        except Exception:  # noqa: BLE001 - drawing labels must never fail the report
            pass

    def label(self, piece, maxlen=14):
        if self.ok is None:
            self._load()
        s = "" if piece is None else str(piece)
        s = s.replace("\n", "↵").replace("\t", "⇥")
        if s.startswith(" "):
            s = "␣" + s[1:]
        s = "".join(c if ord(c) in self.ok else "▯" for c in s)
        if len(s) > maxlen:
            s = s[: maxlen - 1] + "…"
        return s or "∅"


_GLYPHS = _Glyphs()


def _style():
    import matplotlib

    matplotlib.rcParams.update({
        "font.family": "sans-serif", "font.size": 9.5, "axes.titlesize": 10.5,
        "axes.titleweight": "bold", "axes.labelsize": 9.5, "axes.spines.top": False,
        "axes.spines.right": False, "axes.grid": True, "grid.color": "#e9ecef",
        "grid.linewidth": 0.8, "axes.edgecolor": "#adb5bd", "axes.axisbelow": True,
        "legend.frameon": False, "figure.dpi": 100, "savefig.dpi": 110,
        "xtick.color": "#495057", "ytick.color": "#495057",
    })


def _figure(w, h):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _logfmt(ax, axis="x"):
    """Plain-number ticks on a log axis: 0.1 0.2 0.5 1 … over a short range, one per
    decade (at most ~7) over a long one; no minor labels. Call after plotting."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    a = ax.xaxis if axis == "x" else ax.yaxis if axis == "y" else axis
    lo, hi = sorted(a.get_view_interval())
    decades = np.log10(hi / lo) if lo > 0 and hi > 0 else 10
    subs = (1.0, 2.0, 5.0) if decades <= 2.2 else (1.0,)
    a.set_major_locator(LogLocator(base=10, subs=subs, numticks=8))
    a.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    a.set_minor_formatter(NullFormatter())


def _ylog(ax, values):
    """Log y scale when the values span more than a factor of 20, else linear."""
    v = np.concatenate([np.ravel(np.asarray(x, dtype=np.float64)) for x in values]) \
        if len(values) else np.zeros(0)
    v = v[np.isfinite(v) & (v > 0)]
    if len(v) and v.max() / v.min() > 20:
        ax.set_yscale("log")
        _logfmt(ax, "y")


def _intx(ax):
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _png(fig, alt):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_esc(alt)}">'


def _table(header, rows, cls=""):
    h = "".join(f"<th>{x}</th>" for x in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>'


def _missing(key, title, why):
    return (f'<p class="missing" id="{key}-missing"><strong>{_esc(title)}:</strong> '
            f"{_esc(why)}</p>")


def _section(key, title, lead, body):
    lead_html = f'<p class="lead">{lead}</p>' if lead else ""
    return f'<section id="{key}" class="card"><h2>{_esc(title)}</h2>{lead_html}{body}</section>'


# ------------------------------------------------------------------------------ summary

def _summary(f: PunctumFile, ctx):
    a = f.attrs
    c = f.counts()
    n_ok = n_fail = n_b = 0
    fails = []
    msg_kinds = {}
    for df in f.iter_pairs(join=False):
        ok = df["status"].to_numpy() == 0
        n_ok += int(ok.sum())
        n_fail += int((~ok).sum())
        n_b += int((df["seq_b"].notna() & ok).sum())
        if (~ok).any():
            bad = df[~ok]
            for _, r in bad.iterrows():
                kind = re.sub(r"^line \d+:\s*", "", str(r["message"]))
                kind = re.sub(r"\d+", "N", kind)
                msg_kinds[kind] = msg_kinds.get(kind, 0) + 1
                if len(fails) < 12:
                    fails.append(r)
    ctx["n_ok"], ctx["n_fail"], ctx["n_b"] = n_ok, n_fail, n_b

    stats = [s for s in ("attn_mass", "attn_last", "resid_norm", "resid_cos", "topk",
                         "patterns", "lens", "massive", "knockout", "patching") if f.has(s)]
    tiles = [
        ("pairs", _fmt(f.n_pairs), "committed"),
        ("ok", _fmt(n_ok), f"{n_b:,} with a second prompt b"),
        ("skipped", _fmt(n_fail), "bad records" if n_fail else "none"),
        ("sequences", _fmt(c["seqs"]), f"{c['tokens']:,} tokens"),
    ]
    if f.has("knockout"):
        tiles.append(("knockout rows", _fmt(c["knockout"]), f"{len(f.windows)} layer window(s)"))
    if f.has("lens"):
        tiles.append(("lens rows", _fmt(c["lens"]), "positions decoded"))
    tiles_html = '<div class="tiles">' + "".join(
        f'<div class="tile"><div class="tv">{v}</div><div class="tk">{_esc(k)}</div>'
        f'<div class="ts">{_esc(s)}</div></div>' for k, v, s in tiles) + "</div>"

    notes = []
    if f.in_progress:
        notes.append(f'<p class="warn">This file is still being written, or its sweep was '
                     f"interrupted: {f.rows_present:,} pair rows are present, "
                     f"{f.n_pairs:,} committed. Only committed rows are shown.</p>")
    if f.is_view:
        notes.append(f"<p>An MPI view over {len(f._parts)} rank files: "
                     + ", ".join(f"<code>{_esc(os.path.basename(p.path))}</code>"
                                 for p in f._parts) + ".</p>")

    model = [
        ("model", f"<code>{_esc(a.get('model_type', '?'))}</code> "
                  f"<span class='dim'>{_esc(a.get('model_dir', ''))}</span>"),
        ("shape", f"{a.get('n_layers', '?')} layers × {a.get('n_heads', '?')} heads "
                  f"({a.get('n_kv_heads', '?')} kv), d_model {a.get('d_model', '?')}, "
                  f"vocabulary {_fmt(a.get('vocab_size'))}"),
        ("run", f"{_esc(a.get('backend', '?'))} on {_esc(a.get('device', '?'))}, "
                f"compute {_esc(a.get('compute_dtype', '?'))}"),
        ("statistics", ", ".join(f"<code>{s}</code>" for s in stats) or "none"),
        ("written", f"{_esc(a.get('created', '?'))} by punctum "
                    f"{_esc(a.get('punctum_version', '?'))} (format "
                    f"{_esc(a.get('punctum_format', '?'))})"
                    + (f", resumed by {_esc(a['punctum_version_resumed'])}"
                       if a.get("punctum_version_resumed") else "")),
        ("command", f"<code class='cmd'>{_esc(a.get('command_line', ''))}</code>"),
    ]
    kv = '<table class="kv">' + "".join(
        f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in model) + "</table>"

    fail_html = ""
    if n_fail:
        kinds = sorted(msg_kinds.items(), key=lambda t: -t[1])
        fail_html += "<h3>Skipped records</h3>"
        if len(kinds) > 1:
            fail_html += _table(["count", "kind of failure"],
                                [[f"{n:,}", _esc(k)] for k, n in kinds[:12]], "narrow")
        rows = [[_fmt(int(r["line"])), f"<code>{_esc(r['id'])}</code>",
                 _esc(r["message"])] for r in fails]
        more = f"<p class='dim'>… and {n_fail - len(fails):,} more.</p>" if n_fail > len(fails) else ""
        fail_html += _table(["line", "id", "message"], rows, "fails") + more
    else:
        fail_html = "<p class='dim'>No record was skipped.</p>"
    return _section("summary", "Summary", None, tiles_html + "".join(notes) + kv + fail_html)


# ------------------------------------------------------------------------------ KL

def _prompt_text(f, g, side, text):
    """A prompt's text; for records given as token ids (no text), the decoded tokens."""
    if isinstance(text, str) and text:
        return text
    try:
        t = f.tokens(int(g), side)
    except (KeyError, ValueError):
        return text
    if not len(t):
        return text
    return "".join(str(x) for x in t["text"])


def _kl(f: PunctumFile, ctx, top):
    if f.n_pairs == 0:
        return _missing("kl", "No KL", "no pair has been committed yet.")
    if not f._parts[0].has("pairs/kl_ab"):
        return _missing("kl", "No KL", "the file has no /pairs/kl_ab.")
    idx, kab, kba, js = [], [], [], []
    for df in f.iter_pairs(join=False):
        m = df["kl_ab"].notna().to_numpy()
        if m.any():
            idx.append(df.index.to_numpy()[m])
            kab.append(df["kl_ab"].to_numpy()[m])
            kba.append(df["kl_ba"].to_numpy()[m])
            js.append(df["js"].to_numpy()[m])
    if not idx:
        return _missing("kl", "No KL", "no committed pair has a second prompt b (records "
                                       "without `b`, and the sweep had no --derive-b).")
    idx = np.concatenate(idx)
    kab = np.concatenate(kab).astype(np.float64)
    kba = np.concatenate(kba).astype(np.float64)
    js = np.concatenate(js).astype(np.float64)
    n = len(kab)

    fig = _figure(10.5, 3.3)
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[1.6, 1])
    pos = kab[kab > 0]
    if len(pos):
        lo, hi = np.log10(pos.min()), np.log10(pos.max())
        if hi - lo < 1e-6:
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.logspace(lo, hi, min(60, max(10, int(np.sqrt(len(pos))))) + 1)
        ax1.hist(pos, bins=bins, color=BLUE, alpha=0.85, edgecolor="white", linewidth=0.4)
        ax1.set_xscale("log")
        _logfmt(ax1)
        from matplotlib.ticker import FuncFormatter, MaxNLocator

        ax1.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax1.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(v):,}"))
        med = float(np.median(kab))
        if med > 0:
            ax1.axvline(med, color=DARK, lw=1, ls="--")
            ax1.text(med, ax1.get_ylim()[1] * 0.95, f" median {med:.3g}", va="top", fontsize=8.5)
    ax1.set_xlabel("KL(P_a ‖ P_b)  [nats, log scale]")
    ax1.set_ylabel("pairs")
    ax1.set_title(f"Distribution over {n:,} pairs")
    rng = np.random.default_rng(0)
    sel = rng.choice(n, size=min(n, 5000), replace=False) if n > 5000 else np.arange(n)
    x, y = kab[sel], kba[sel]
    good = (x > 0) & (y > 0)
    ax2.scatter(x[good], y[good], s=9, alpha=0.55, color=BLUE, edgecolors="none")
    if good.any():
        lim = [min(x[good].min(), y[good].min()), max(x[good].max(), y[good].max())]
        ax2.plot(lim, lim, color=GREY, lw=0.8, ls=":")
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        _logfmt(ax2, "x")
        _logfmt(ax2, "y")
    ax2.set_xlabel("KL(a‖b)")
    ax2.set_ylabel("KL(b‖a)")
    ax2.set_title("Asymmetry" + (f" ({len(sel):,} sampled)" if n > len(sel) else ""))
    img = _png(fig, "Distribution of KL(a||b) over pairs")

    q = np.quantile(kab, [0.5, 0.9, 0.99])
    stats = _table(["pairs", "mean", "median", "90 %", "99 %", "max", "mean JS"],
                   [[f"{n:,}", _fmt(kab.mean()), _fmt(q[0]), _fmt(q[1]), _fmt(q[2]),
                     _fmt(kab.max()), _fmt(js.mean())]], "narrow num")

    k = min(top, n)
    order = np.argsort(-kab, kind="stable")[:k]
    ctx["top_pairs"] = [int(i) for i in idx[order]]
    tp = f.read_pairs(idx[order])
    rows = []
    for rank, (g, r) in enumerate(tp.iterrows(), 1):
        ta, tb = _prompt_text(f, g, "a", r.get("text_a")), _prompt_text(f, g, "b", r.get("text_b"))
        da, db = _diff_html(ta, tb)
        t1 = f"{_fmt(r.get('top1_id_a'))} → {_fmt(r.get('top1_id_b'))}"
        rows.append([str(rank), f"<code>{_esc(r['id'])}</code><div class='dim'>line "
                     f"{int(r['line']):,}</div>", f"<div class='prompt'>{da}</div>",
                     f"<div class='prompt'>{db}</div>", _fmt(r["kl_ab"]), _fmt(r["kl_ba"]),
                     _fmt(r["js"]), t1])
    table = _table(["#", "id", "prompt a", "prompt b", "KL(a‖b)", "KL(b‖a)", "JS",
                    "top-1 a → b"], rows, "pairs")
    lead = ("How different are the model's next-token distributions for the two prompts of "
            "a pair? KL(P<sub>a</sub>‖P<sub>b</sub>) at the final position, in nats.")
    return _section("kl", "Divergence between the prompts of a pair", lead,
                    img + stats + f"<h3>The {k} pairs that differ most</h3>"
                    "<p class='dim'>The text after the prompts' common prefix is highlighted; "
                    "↵ is a line break, ␣ a trailing space.</p>" + table)


# ------------------------------------------------------------------------------ attention

def _heat(ax, m, labels, punct, norm, title, cmap):
    im = ax.imshow(m, aspect="auto", origin="lower", cmap=cmap, norm=norm,
                   interpolation="nearest")
    ax.set_title(title, loc="left")
    ax.set_yticks(range(0, m.shape[0], max(1, -(-m.shape[0] // 12))))
    ax.set_ylabel("layer")
    ax.set_xticks(range(len(labels)))
    rot = 0 if len(labels) <= 12 else 90
    ax.set_xticklabels(labels, rotation=rot, fontsize=8 if rot == 0 else 7.5,
                       family=_GLYPHS.family)
    ax.grid(False)
    for t, p in zip(ax.get_xticklabels(), punct):
        if p:
            t.set_color(ACCENT)
            t.set_fontweight("bold")
    for j, p in enumerate(punct):
        if p:
            ax.plot([j], [m.shape[0] - 0.5 + 0.35], marker="v", color=ACCENT, ms=5,
                    clip_on=False, zorder=5)
    for s in ax.spines.values():
        s.set_visible(False)
    return im


def _attention(f: PunctumFile, ctx, n_pairs, max_tokens):
    has_mass, has_last = f.has("attn_mass"), f.has("attn_last")
    if not (has_mass or has_last):
        return _missing("attention", "No attention statistics",
                        "the sweep was run without mass or last in --stats.")
    from matplotlib.colors import LogNorm

    body = []
    chosen = [g for g in ctx.get("top_pairs", [])][:n_pairs]
    if not chosen:  # no KL: take the first pairs that have tokens
        for df in f.iter_pairs(chunk=256):
            chosen = [int(g) for g in df.index[df["ok"]][:n_pairs]]
            break
    kinds = [k for k, h in (("attn_mass", has_mass), ("attn_last", has_last)) if h]
    label = {"attn_mass": "attention mass received (Σ over queries)",
             "attn_last": "attention paid by the final position"}
    for g in chosen:
        sides = []
        for side in ("a", "b"):
            try:
                t = f.tokens(g, side)
            except KeyError:
                continue
            if len(t):
                sides.append((side, t))
        if not sides:
            continue
        info = sides[0][1].info
        ncol = len(sides)
        fig = _figure(11.0, 0.6 + 2.6 * len(kinds) + 0.4)
        axes = fig.subplots(len(kinds), ncol, squeeze=False)
        for r, kind in enumerate(kinds):
            mats = []
            for side, t in sides:
                m = t._arrays[kind].astype(np.float64).mean(axis=2).T  # [L, T]
                mats.append(m)
            allv = np.concatenate([m[m > 0].ravel() for m in mats]) if mats else np.array([1.0])
            vmin = max(np.quantile(allv, 0.02), 1e-4) if len(allv) else 1e-4
            vmax = allv.max() if len(allv) else 1.0
            norm = LogNorm(vmin=vmin, vmax=max(vmax, vmin * 1.01))
            cmap = "magma_r" if kind == "attn_mass" else "viridis_r"
            im = None
            for c, ((side, t), m) in enumerate(zip(sides, mats)):
                T = m.shape[1]
                s0 = max(0, T - max_tokens)
                lab = [_GLYPHS.label(x) for x in t["text"].to_numpy()[s0:]]
                pun = t["is_punct"].to_numpy()[s0:]
                cut = f" (last {T - s0} of {T} tokens)" if s0 else f" ({T} tokens)"
                im = _heat(axes[r][c], np.clip(m[:, s0:], vmin, None), lab, pun, norm,
                           f"{side}: {label[kind]}{cut}", cmap)
            cb = fig.colorbar(im, ax=list(axes[r]), shrink=0.9, pad=0.01)
            cb.set_label("mean over heads", fontsize=8)
            _logfmt(cb.ax, "y")
        img = _png(fig, f"attention heatmaps for pair {info['pair_id']}")
        kl = ""
        try:
            r = f.read_pairs([g]).iloc[0]
            kl = f" · KL(a‖b) = {_fmt(r['kl_ab'])}"
        except (KeyError, IndexError):
            pass
        body.append(f"<h3><code>{_esc(info['pair_id'])}</code>"
                    f"<span class='dim'>{kl}</span></h3>{img}")

    # file-wide profile: attention received per query, punctuation vs other tokens
    prof = _attn_profile(f) if has_mass else None
    if prof is not None:
        body.append(prof)
    lead = ("Which tokens does the model attend to, layer by layer? For the pairs that "
            "differ most, the attention each token receives (mean over heads, log colour "
            f"scale); <span style='color:{ACCENT};font-weight:bold'>▼ punctuation</span> "
            "tokens are marked. Prompt a on the left, b on the right.")
    return _section("attention", "Attention per token and layer", lead, "".join(body))


def _attn_profile(f: PunctumFile):
    L = f.n_layers
    sums = {k: np.zeros(L) for k in ("first", "punct", "other")}
    cnt = {k: 0 for k in sums}
    seen = 0
    for p in f._parts:
        n = min(p.committed["tokens"], ATTN_TOKEN_LIMIT - seen)
        for lo in range(0, n, CHUNK):
            hi = min(lo + CHUNK, n)
            seq = p.read("tokens/seq", lo, hi).astype(np.int64)
            pos = p.read("tokens/pos", lo, hi).astype(np.int64)
            pun = p.read("tokens/is_punct", lo, hi) != 0
            mass = p.read("tokens/attn_mass", lo, hi).astype(np.float64).mean(axis=2)
            ok = (seq >= 0) & (seq < p.committed["seqs"])
            ntok = np.zeros(len(seq), np.int64)
            ntok[ok] = p.gather("seqs/n_tok", seq[ok])
            nq = ntok - pos
            ok &= nq > 0
            per_q = mass / np.where(nq > 0, nq, 1)[:, None]
            for k, m in (("first", ok & (pos == 0)), ("punct", ok & (pos > 0) & pun),
                         ("other", ok & (pos > 0) & ~pun)):
                sums[k] += per_q[m].sum(axis=0)
                cnt[k] += int(m.sum())
        seen += n
        if seen >= ATTN_TOKEN_LIMIT:
            break
    if not any(cnt.values()):
        return None
    fig = _figure(7.0, 3.0)
    ax = fig.subplots()
    styles = {"first": ("first token", GREY), "punct": ("punctuation", ACCENT),
              "other": ("other tokens", BLUE)}
    ys = []
    for k, (lab, col) in styles.items():
        if cnt[k]:
            ys.append(sums[k] / cnt[k])
            ax.plot(range(L), ys[-1], marker="o", ms=3.5, color=col,
                    label=f"{lab} (n={cnt[k]:,})", lw=1.8)
    _ylog(ax, ys)
    ax.set_xlabel("layer")
    ax.set_ylabel("mean attention per query")
    _intx(ax)
    ax.legend(fontsize=8.5, loc="best")
    ax.set_title("Attention a token receives per later query (attn_mass / (T − j))")
    scope = "all" if seen < ATTN_TOKEN_LIMIT else f"the first {seen:,}"
    return (f"<h3>Across the file</h3><p class='dim'>Over {scope} committed tokens; heads "
            "averaged. Dividing by the number of queries that can see token j makes early "
            "and late tokens comparable.</p>" + _png(fig, "attention profile by layer"))


# ------------------------------------------------------------------------------ knockout

def _knockout(f: PunctumFile, ctx):
    if not f.has("knockout"):
        return _missing("knockout", "No knockout",
                        "the sweep was run without --ablate knockout.")
    if f.counts()["knockout"] == 0:
        return _missing("knockout", "No knockout rows",
                        "knockout was asked for, but no committed row was written (no "
                        "position of the --positions set before the final token).")
    wins = f.windows
    W = max(len(wins), 1)
    span = (wins["hi"] - wins["lo"]).to_numpy() if len(wins) else np.array([f.n_layers])
    main_w = int(np.argmax(span))
    D = KO_MAX_DIST
    pos_sum = np.zeros((2, D + 1))
    pos_cnt = np.zeros((2, D + 1), np.int64)
    w_sum = np.zeros((W, 2))
    w_chg = np.zeros((W, 2))
    w_cnt = np.zeros((W, 2), np.int64)
    tok = {}
    for df in f.iter_knockout():
        if not len(df):
            continue
        pun = df["is_punct"].fillna(False).to_numpy(dtype=bool) if "is_punct" in df else \
            np.zeros(len(df), bool)
        ip = pun.astype(np.int64)
        kl = df["kl"].to_numpy(dtype=np.float64)
        fin = np.isfinite(kl)
        w = df["window"].to_numpy()
        wok = (w >= 0) & (w < W) & fin
        np.add.at(w_sum, (w[wok], ip[wok]), kl[wok])
        np.add.at(w_chg, (w[wok], ip[wok]), df["top1_changed"].to_numpy()[wok])
        np.add.at(w_cnt, (w[wok], ip[wok]), 1)
        m = (w == main_w) & fin
        d = df["dist_to_last"].to_numpy()
        dm = m & (d >= 1) & (d <= D)
        np.add.at(pos_sum, (ip[dm], d[dm]), kl[dm])
        np.add.at(pos_cnt, (ip[dm], d[dm]), 1)
        if "token" in df:
            g = pd.DataFrame({"t": df["token"].to_numpy()[m], "p": pun[m], "kl": kl[m]})
            g = g.dropna(subset=["t"]).groupby(["t", "p"])["kl"].agg(["sum", "count"])
            for (t, p), r in g.iterrows():
                s = tok.setdefault((t, p), [0.0, 0])
                s[0] += r["sum"]
                s[1] += r["count"]
    if not w_cnt.any():
        return _missing("knockout", "No knockout rows", "no committed row with a finite KL.")

    fig = _figure(10.5, 3.4)
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[1.7, 1])
    dist = np.arange(D + 1)
    ys = []
    for ip, lab, col in ((1, "punctuation", ACCENT), (0, "other tokens", BLUE)):
        c = pos_cnt[ip]
        m = c > 0
        if m.any():
            ys.append(pos_sum[ip][m] / c[m])
            ax1.plot(-dist[m], ys[-1], marker="o", ms=3.5, lw=1.6, color=col,
                     label=f"{lab} (n={int(c.sum()):,})")
    _ylog(ax1, ys)
    _intx(ax1)
    ax1.set_xlabel("knocked-out position, relative to the final token (−1: the one before)")
    ax1.set_ylabel("mean KL(P ‖ Q)  [nats]")
    wl = (f"layers [{wins['lo'].iloc[main_w]}, {wins['hi'].iloc[main_w]})" if len(wins)
          else "")
    ax1.set_title(f"Effect by position, {wl}")
    ax1.legend(fontsize=8.5)
    xs = np.arange(W)
    bw = 0.38
    for ip, lab, col, off in ((1, "punctuation", ACCENT, -bw / 2), (0, "other", BLUE, bw / 2)):
        with np.errstate(invalid="ignore", divide="ignore"):
            vals = np.where(w_cnt[:, ip] > 0, w_sum[:, ip] / np.maximum(w_cnt[:, ip], 1), 0)
        ax2.bar(xs + off, vals, bw, color=col, label=lab, alpha=0.9)
    ax2.set_xticks(xs)
    ax2.set_xticklabels([f"[{lo},{hi})" for lo, hi in zip(wins["lo"], wins["hi"])]
                        if len(wins) else ["all"])
    ax2.set_xlabel("layer window")
    ax2.set_ylabel("mean KL")
    ax2.set_title("Punctuation vs other, by window")
    ax2.legend(fontsize=8.5)
    img = _png(fig, "knockout effect by position and window")

    rows = []
    for w in range(W):
        lo = wins["lo"].iloc[w] if len(wins) else 0
        hi = wins["hi"].iloc[w] if len(wins) else f.n_layers
        cells = [f"[{lo}, {hi})"]
        for ip in (1, 0):
            n = w_cnt[w, ip]
            cells += [f"{n:,}", _fmt(w_sum[w, ip] / n) if n else "–",
                      f"{100 * w_chg[w, ip] / n:.1f} %" if n else "–"]
        rows.append(cells)
    wt = _table(["window", "punct. rows", "mean KL", "top-1 changed", "other rows",
                 "mean KL", "top-1 changed"], rows, "num")
    items = [(t, p, s / n, n) for (t, p), (s, n) in tok.items() if n >= 3] or \
            [(t, p, s / n, n) for (t, p), (s, n) in tok.items()]
    items.sort(key=lambda x: -x[2])
    trows = [[f"<code class='tok{' p' if p else ''}'>{_tok_html(t)}</code>",
              "yes" if p else "", f"{int(n):,}", _fmt(v)] for t, p, v, n in items[:12]]
    tt = _table(["token", "punct.", "knockouts", "mean KL"], trows, "narrow num")
    lead = ("What happens to the next-token distribution when no later position may "
            "attend to one token? KL(P‖Q) between the clean (P) and knocked-out (Q) "
            "distributions at the final position.")
    n_p, n_o = int(w_cnt[:, 1].sum()), int(w_cnt[:, 0].sum())
    if not n_o or not n_p:
        lead += (" <em>Only " + ("punctuation" if n_p else "non-punctuation")
                 + " positions were knocked out (the sweep's --positions set), so there is "
                 "nothing to compare them with.</em>")
    return _section("knockout", "Attention knockout", lead,
                    img + "<h3>By layer window</h3>" + wt
                    + "<h3>Tokens whose knockout matters most</h3>" + tt)


# ------------------------------------------------------------------------------ lens

def _lens(f: PunctumFile, ctx):
    if not f.has("lens"):
        return _missing("lens", "No logit lens", "the sweep was run without lens in --stats.")
    if f.counts()["lens"] == 0:
        return _missing("lens", "No logit-lens rows", "no committed row yet.")
    L1 = f._parts[0].shape("lens/logp_top1")[1]
    cats = ("final", "punct", "other")
    acc = {(v, c): [np.zeros(L1), np.zeros(L1), np.zeros(L1)] for v in ("top1", "target")
           for c in cats}
    for p in f._parts:
        n = p.committed["lens"]
        for lo in range(0, n, CHUNK):
            hi = min(lo + CHUNK, n)
            seq = p.read("lens/seq", lo, hi).astype(np.int64)
            pos = p.read("lens/pos", lo, hi).astype(np.int64)
            valid, info = f._seq_join(p, seq)
            toks = f._token_fields(p, info["tok_start"], pos, fields=("is_punct",))
            pun = np.zeros(len(seq), bool)
            if toks["is_punct"] is not None:
                v, ok = toks["is_punct"]
                pun = ok & (v != 0)
            fin = pos == info["n_tok"] - 1
            cat = {"final": valid & fin, "punct": valid & ~fin & pun,
                   "other": valid & ~fin & ~pun}
            for v, name in (("top1", "lens/logp_top1"), ("target", "lens/logp_target")):
                if not p.has(name):
                    continue
                x = p.read(name, lo, hi).astype(np.float64)
                for c, m in cat.items():
                    xm = x[m]
                    good = np.isfinite(xm)
                    a = acc[(v, c)]
                    a[0] += np.where(good, xm, 0).sum(axis=0)
                    a[1] += np.where(good, xm * xm, 0).sum(axis=0)
                    a[2] += good.sum(axis=0)
    has_target = any(acc[("target", c)][2].sum() > 0 for c in cats)
    panels = [("top1", "log-prob of the final top-1 token")]
    if has_target:
        panels.append(("target", "log-prob of the target token"))
    fig = _figure(10.5 if has_target else 7.5, 3.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    style = {"final": ("final position", GREEN), "punct": ("punctuation positions", ACCENT),
             "other": ("other positions", BLUE)}
    x = np.arange(L1)
    for ax, (v, title) in zip(axes, panels):
        for c in cats:
            s, s2, n = acc[(v, c)]
            if n.sum() == 0:
                continue
            nn = np.maximum(n, 1)
            mean = s / nn
            sd = np.sqrt(np.maximum(s2 / nn - mean ** 2, 0))
            lab, col = style[c]
            ax.plot(x, mean, color=col, lw=1.9, marker="o", ms=3,
                    label=f"{lab} (n={int(n.max()):,})")
            ax.fill_between(x, mean - sd, mean + sd, color=col, alpha=0.12, lw=0)
        ax.set_xlabel("layer whose input residual is decoded (L: final)")
        ax.set_ylabel("log-prob")
        ax.set_title(title)
        _intx(ax)
        ax.legend(fontsize=8.5, loc="best")
    img = _png(fig, "logit lens curves")
    lead = ("Does the model already know where it is going at a line break or a period? "
            "The residual stream entering each layer, decoded through the final norm and LM "
            "head, at the positions swept; mean ± 1 s.d.")
    return _section("lens", "Logit lens", lead, img)


# ------------------------------------------------------------------------------ patching

def _patching(f: PunctumFile, ctx):
    if not f.has("patching"):
        return _missing("patching", "No residual patching",
                        "the sweep was run without --patch resid.")
    if f.counts()["patching"] == 0:
        return _missing("patching", "No patching rows",
                        "no committed pair has prompts of equal token counts.")
    L = f.n_layers + 1
    cats = ("final", "punct", "other")
    s = {c: np.zeros(L) for c in cats}
    n = {c: np.zeros(L, np.int64) for c in cats}
    for df in f.iter_patching():
        lay = df["layer"].to_numpy()
        kl = df["kl_to_b"].to_numpy(dtype=np.float64)
        fin = df["dist_to_last"].to_numpy() == 0
        pun = df["is_punct"].fillna(False).to_numpy(dtype=bool) if "is_punct" in df else \
            np.zeros(len(df), bool)
        ok = np.isfinite(kl) & (lay >= 0) & (lay < L)
        for c, m in (("final", ok & fin), ("punct", ok & ~fin & pun),
                     ("other", ok & ~fin & ~pun)):
            np.add.at(s[c], lay[m], kl[m])
            np.add.at(n[c], lay[m], 1)
    fig = _figure(7.5, 3.2)
    ax = fig.subplots()
    style = {"final": ("final position", GREEN), "punct": ("punctuation", ACCENT),
             "other": ("other positions", BLUE)}
    for c in cats:
        m = n[c] > 0
        if m.any():
            ax.plot(np.arange(L)[m], s[c][m] / n[c][m], marker="o", ms=3.5, lw=1.8,
                    color=style[c][1], label=f"{style[c][0]} (n={int(n[c].sum()):,})")
    _intx(ax)
    ax.set_xlabel("layer whose input residual is patched from b")
    ax.set_ylabel("mean KL(P_b ‖ P_patched)")
    ax.set_title("How much of b does one patched position carry?")
    ax.legend(fontsize=8.5)
    lead = ("Run a, but with the residual stream entering layer l at position p taken from "
            "b. Low KL to b: that one position carries the difference between the prompts.")
    return _section("patching", "Residual patching", lead, _png(fig, "patching by layer"))


# ------------------------------------------------------------------------------ generation

def _gen_hits(gen):
    """Hit rates of target / target_b for patching rows by patched layer (rows with a
    target only), and the clean rates per side: ({layer: (n, rate_t, rate_tb)}, clean)."""
    pa = gen[(gen["kind"] == "patching") & gen["hit"].notna() & gen["hit_b"].notna()]
    by_layer = {}
    for layer, d in pa.groupby(pa["layer"].astype("int64")):
        by_layer[int(layer)] = (len(d), float(d["hit"].astype(float).mean()),
                                float(d["hit_b"].astype(float).mean()))
    cl = gen[(gen["kind"] == "clean") & gen["hit"].notna() & gen["hit_b"].notna()]
    clean = {side: (float(d["hit"].astype(float).mean()), float(d["hit_b"].astype(float).mean()))
             for side, d in cl.groupby("side", observed=True)}
    return by_layer, clean


def _generation(f: PunctumFile, ctx, top):
    title = "What the model goes on to say"
    if not f.has("gen"):
        return _missing("gen", title, "the sweep was run without --generate.")
    gen = f.gen
    if not len(gen):
        return _missing("gen", title, "no committed continuation yet.")
    pairs = f.pairs
    clean = gen[gen["kind"] == "clean"]
    text = {(int(p), str(sd)): t for p, sd, t in zip(clean["pair"], clean["side"], clean["text"])}
    both = pairs[pairs["seq_b"].notna() & pairs["ok"]] if "seq_b" in pairs else pairs.iloc[:0]
    body = []
    if len(both):
        rank = both.sort_values("gen_kl_ab", ascending=False, na_position="last").head(top)
        rows = []
        for g, r in rank.iterrows():
            pa, pb = _diff_html(_prompt_text(f, g, "a", r.get("text_a")),
                                _prompt_text(f, g, "b", r.get("text_b")), limit=60)
            rows.append([_esc(r["id"]), f'<div class="prompt">{pa}</div>',
                         f'<div class="prompt">{_visible(text.get((int(g), "a")), 160)}</div>',
                         f'<div class="prompt">{pb}</div>',
                         f'<div class="prompt">{_visible(text.get((int(g), "b")), 160)}</div>',
                         _fmt(r["gen_diverge"]), _fmt(r["gen_kl_ab"])])
        body.append("<h3>The pairs whose answers differ most (by gen_kl_ab)</h3>")
        body.append(_table(["id", "prompt a", "a goes on", "prompt b", "b goes on",
                            "diverge", "gen_kl_ab"], rows, "pairs"))
        dv = both["gen_diverge"].to_numpy(dtype=np.int64)
        kl = both["gen_kl_ab"].to_numpy(dtype=np.float64)
        fig = _figure(9, 3.0)
        ax1, ax2 = fig.subplots(1, 2)
        same = int((dv < 0).sum())
        if (dv >= 0).any():
            ax1.hist(dv[dv >= 0], bins=np.arange(dv.max() + 2) - 0.5, color=BLUE)
        ax1.set_xlabel("gen_diverge: first step where a and b differ")
        ax1.set_ylabel("pairs")
        ax1.set_title(f"{same:,} of {len(dv):,} pairs never diverge", fontsize=10)
        _intx(ax1)
        k = kl[np.isfinite(kl) & (kl > 0)]
        if len(k):
            ax2.hist(np.log10(k), bins=30, color=ACCENT)
        ax2.set_xlabel("log10 gen_kl_ab (nats, summed over a's steps)")
        ax2.set_title(f"median {_fmt(np.median(k) if len(k) else np.nan)} nats; next-token "
                      f"KL median {_fmt(both['kl_ab'].median())}", fontsize=10)
        body.append(_png(fig, "gen_diverge and gen_kl_ab"))
    by_layer, clean_rates = _gen_hits(gen)
    if by_layer:
        fig = _figure(7.5, 3.2)
        ax = fig.subplots()
        L = sorted(by_layer)
        ax.plot(L, [by_layer[l][1] for l in L], marker="o", ms=3.5, color=BLUE,
                label="patched a writes target (a's word)")
        ax.plot(L, [by_layer[l][2] for l in L], marker="o", ms=3.5, color=ACCENT,
                label="patched a writes target_b (b's word)")
        for side, (ht, hb) in clean_rates.items():
            ax.axhline(hb, color=ACCENT if side == "b" else GREY, lw=0.8, ls="--",
                       label=f"clean {side} writes target_b ({hb:.2f}; target {ht:.2f})")
        ax.set_ylim(-0.02, 1.02)
        _intx(ax)
        ax.set_xlabel("layer whose input residual is patched from b")
        ax.set_ylabel("hit rate")
        ax.set_title("Does patching from b switch the word the model writes?")
        ax.legend(fontsize=8)
        body.append("<h3>Target hit rates under residual patching</h3>")
        body.append(_png(fig, "hit rate by patched layer"))
        pa = gen[(gen["kind"] == "patching") & gen["hit_b"].notna()]
        tab = pa.groupby([pa["layer"].astype("int64"), pa["pos"].astype("int64")])["hit_b"] \
            .apply(lambda x: x.astype(float).mean()).unstack()
        if tab.shape[1] <= 40:
            body.append("<p class=\"dim\">target_b hit rate by patched layer (rows) and "
                        "position (columns)</p>")
            body.append(_table(["layer"] + [str(c) for c in tab.columns],
                               [[str(l)] + [_fmt(v, 2) for v in row]
                                for l, row in zip(tab.index, tab.to_numpy())], "num narrow"))
    lead = ("Greedy continuations of a and b (and of every knockout / patching variant, its "
            "intervention held at each generated step). gen_diverge: the first step where "
            "a's and b's tokens differ; gen_kl_ab: Σ over a's steps of KL(P_a,t ‖ P_b,t), b "
            "teacher-forced with a's tokens — a difference in the answer, not in the next "
            "token alone.")
    return _section("gen", title, lead, "".join(body) or "<p>No pair has both prompts.</p>")


# ------------------------------------------------------------------------------ page

CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f1f3f5;color:#212529;font:14px/1.5 -apple-system,BlinkMacSystemFont,
"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans",sans-serif}
header{background:linear-gradient(120deg,#1b2a41,#324a5f);color:#fff;padding:22px 0 18px}
.wrap{max-width:1180px;margin:0 auto;padding:0 24px}
header h1{margin:0;font-size:22px;font-weight:650;letter-spacing:.2px}
header h1 .dot{color:#ff922b}
header .sub{opacity:.8;font-size:13px;margin-top:2px;word-break:break-all}
nav{margin-top:12px;display:flex;gap:6px;flex-wrap:wrap}
nav a{color:#fff;text-decoration:none;background:rgba(255,255,255,.12);padding:3px 11px;
border-radius:999px;font-size:12.5px}
nav a:hover{background:rgba(255,255,255,.25)}
main{padding:18px 0 40px}
.card{background:#fff;border-radius:10px;box-shadow:0 1px 3px rgba(0,0,0,.08),0 1px 2px rgba(0,0,0,.04);
padding:18px 22px;margin:0 0 18px}
h2{margin:0 0 6px;font-size:18px}
h3{margin:18px 0 8px;font-size:14.5px;color:#343a40}
.lead{color:#495057;margin:0 0 12px;max-width:900px}
.dim{color:#868e96;font-weight:normal;font-size:12.5px;margin-left:6px}
p.dim{margin:4px 0 8px 0}
img{max-width:100%;height:auto;display:block;margin:8px 0}
table{border-collapse:collapse;width:100%;margin:6px 0 10px;font-size:12.8px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e9ecef;vertical-align:top}
thead th{background:#f8f9fa;color:#495057;font-weight:600;border-bottom:2px solid #dee2e6}
tbody tr:nth-child(even){background:#fcfcfd}
table.narrow{width:auto;min-width:420px}
table.num td{font-variant-numeric:tabular-nums}
table.kv th{width:110px;color:#868e96;font-weight:600;background:none;border-bottom:1px solid #f1f3f5}
table.kv td{border-bottom:1px solid #f1f3f5}
table.pairs td:nth-child(n+5){white-space:nowrap;font-variant-numeric:tabular-nums}
table.pairs td:nth-child(2) code,table.fails code{white-space:nowrap}
.prompt{font-family:"SFMono-Regular",Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:12px;
white-space:normal;word-break:break-word;max-width:340px}
mark{background:#ffe8cc;color:#d9480f;border-radius:3px;padding:0 2px;font-weight:600}
.ws{color:#adb5bd}
code{font-family:"SFMono-Regular",Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:12px;
background:#f1f3f5;border-radius:4px;padding:1px 5px}
code.cmd{display:block;white-space:pre-wrap;word-break:break-all;padding:6px 8px}
code.tok.p{background:#fff4e6;color:#d9480f;font-weight:700}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px;margin:8px 0 14px}
.tile{background:#f8f9fa;border-radius:8px;padding:10px 14px;border-left:4px solid #1c7ed6}
.tile:nth-child(3){border-left-color:#e8590c}
.tv{font-size:22px;font-weight:700;font-variant-numeric:tabular-nums}
.tk{font-size:12px;text-transform:uppercase;letter-spacing:.6px;color:#495057;font-weight:600}
.ts{font-size:12px;color:#868e96}
.warn{background:#fff9db;border-left:4px solid #fab005;padding:8px 12px;border-radius:6px}
p.missing{background:#fff;border-radius:10px;padding:12px 22px;margin:0 0 18px;color:#495057;
box-shadow:0 1px 3px rgba(0,0,0,.06);border-left:4px solid #ced4da}
table.fails td:first-child{white-space:nowrap}
footer{color:#868e96;font-size:12px;text-align:center;padding:0 0 30px}
p.finding{margin:0 0 10px;max-width:1000px;line-height:1.55}
table.findings td{font-variant-numeric:tabular-nums}
table.findings td:first-child{font-weight:600;color:#343a40;width:26%}
table.findings td:nth-child(2){width:28%}
table.findings td:nth-child(3){width:32%}
"""


def render(path, top=10, n_pairs=3, max_tokens=48, title=None):
    """The report of one file, as an HTML string."""
    _style()
    from . import _findings

    with PunctumFile(path) as f:
        ctx = {}
        _findings.compute(f, ctx)
        parts = [("findings", "Findings", _findings.findings(f, ctx)),
                 ("summary", "Summary", _summary(f, ctx)),
                 ("sinks", "Sinks", _findings.sinks(f, ctx)),
                 ("massive", "Massive activations", _findings.massive(f, ctx)),
                 ("punct", "Punctuation", _findings.punct(f, ctx)),
                 ("kl", "KL", _kl(f, ctx, top)),
                 ("attention", "Attention", _attention(f, ctx, n_pairs, max_tokens)),
                 ("knockout", "Knockout", _knockout(f, ctx)),
                 ("lens", "Logit lens", _lens(f, ctx)),
                 ("patching", "Patching", _patching(f, ctx)),
                 ("gen", "Generation", _generation(f, ctx, top))]
        a = f.attrs
        name = os.path.basename(f.path)
    nav = "".join(f'<a href="#{k}">{_esc(t)}</a>' for k, t, h in parts
                  if f'id="{k}"' in h)
    body = "".join(h for _, _, h in parts)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    ttl = title or f"punctum report — {name}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(ttl)}</title><style>{CSS}</style></head>
<body><header><div class="wrap"><h1>punctum<span class="dot">.</span> report
<span style="font-weight:400;opacity:.75">— {_esc(name)}</span></h1>
<div class="sub">{_esc(a.get('model_type', ''))} · {_esc(a.get('model_dir', ''))} ·
{_esc(os.path.abspath(path))}</div><nav>{nav}</nav></div></header>
<main class="wrap">{body}</main>
<footer>Generated {now} by the punctum Python package {__version__}.</footer>
</body></html>
"""


def write_report(path, out, **kw):
    html_text = render(path, **kw)
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(html_text)
    return out
