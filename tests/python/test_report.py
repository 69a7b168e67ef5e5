"""`python -m punctum report`: the HTML report, opened in a real browser (headless
Chromium). The DOM Chromium builds must hold every expected section, every <img> must be
an inline PNG that decodes, nothing may be fetched from the network, and a screenshot of
the page is kept in tests/artifacts/ for people to look at."""
from __future__ import annotations

import base64
import os
import shutil
import struct
import subprocess
import sys
from html.parser import HTMLParser

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PYDIR = os.path.join(REPO, "python")
ARTIFACTS = os.path.join(REPO, "tests", "artifacts")
sys.path.insert(0, PYDIR)
sys.path.insert(0, HERE)

import synth_h5  # noqa: E402

SECTIONS = ["findings", "summary", "sinks", "punct", "kl", "attention", "knockout", "lens"]


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        p = shutil.which(name)
        if p:
            return p
    return None


needs_browser = pytest.mark.skipif(
    _chromium() is None,
    reason="no Chromium: scripts/setup.sh installs the Debian package `chromium`")


def render(h5, out, *extra):
    env = dict(os.environ, PYTHONPATH=PYDIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "punctum", "report", h5, "--out", out, *extra],
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip() == out
    return out


def browser(args, tmp, timeout=120):
    argv = [_chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
            "--no-first-run", "--disable-extensions", "--disable-background-networking",
            f"--user-data-dir={os.path.join(tmp, 'chromium-profile')}", *args]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


class DOM(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = {}
        self.imgs = []
        self.external = []
        self.text = []
        self.first_section = None
        self.table_classes = []
        self.table_heads = {}
        self._in_th = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids[a["id"]] = tag
            if tag == "section" and self.first_section is None:
                self.first_section = a["id"]
        if tag == "table":
            self.table_classes.append(a.get("class") or "")
            self.table_heads.setdefault(self.table_classes[-1], [])
        if tag == "th" and self.table_classes:
            self._in_th = self.table_classes[-1]
        if tag == "img":
            self.imgs.append(a)
        for k in ("src", "href"):
            v = a.get(k) or ""
            if v.startswith(("http:", "https:", "//")) or (tag in ("script", "link") and v):
                self.external.append((tag, v))

    def handle_endtag(self, tag):
        if tag == "th":
            self._in_th = None

    def handle_data(self, data):
        self.text.append(data)
        if self._in_th is not None:
            self.table_heads[self._in_th].append(data.strip())


def png_size(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def check_dom(html_path, tmp, expect=SECTIONS, absent=(), images=True):
    dom_html = browser(["--dump-dom", "file://" + os.path.abspath(html_path)], tmp)
    d = DOM()
    d.feed(dom_html)
    for s in expect:
        assert d.ids.get(s) == "section", f"section #{s} missing from the rendered page"
    for s in absent:
        assert s not in d.ids, f"#{s} should have been left out"
        assert f"{s}-missing" in d.ids, f"no line saying why #{s} was left out"
    assert not d.external, f"the report fetches external resources: {d.external}"
    assert d.imgs or not images, "no images"
    for img in d.imgs:
        src = img.get("src", "")
        assert src.startswith("data:image/png;base64,"), src[:60]
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        w, h = png_size(raw)
        assert len(raw) > 5000 and w >= 300 and h >= 150, (len(raw), w, h)
        assert img.get("alt")
    return d, " ".join("".join(d.text).split())


def screenshot(html_path, name, tmp, height=4000):
    os.makedirs(ARTIFACTS, exist_ok=True)
    gi = os.path.join(ARTIFACTS, ".gitignore")
    if not os.path.exists(gi):
        with open(gi, "w") as fh:
            fh.write("*.png\n")
    out = os.path.join(ARTIFACTS, name)
    if os.path.exists(out):
        os.remove(out)
    browser([f"--screenshot={out}", f"--window-size=1280,{height}",
             "file://" + os.path.abspath(html_path)], tmp)
    with open(out, "rb") as fh:
        raw = fh.read()
    assert png_size(raw) == (1280, height)
    assert len(raw) > 50_000, "the screenshot is (almost) blank"
    return out


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    h5 = str(d / "sweep.h5")
    recs = synth_h5.make_records(40, n_failed=3) + synth_h5.literature_records(start_line=41)
    synth_h5.write(h5, records=recs, positions="all", n_layers=6, n_heads=4,
                   stats=("mass", "last", "resid", "topk", "lens", "massive"))
    return h5


@needs_browser
def test_full_report_in_browser(full, tmp_path):
    html_path = render(full, str(tmp_path / "report.html"), "--top", "8")
    with open(html_path, encoding="utf-8") as fh:
        src = fh.read()
    assert "<script" not in src and "http://" not in src and "https://" not in src
    d, text = check_dom(html_path, str(tmp_path), SECTIONS + ["massive", "patching"])
    assert "3 skipped" in text.lower() or "skipped" in text.lower()
    for msg in ("line 2:", "pairs that differ most", "Attention knockout", "Logit lens"):
        assert msg in text, msg
    # KL (1), attention (3 pairs + profile), knockout, lens, patching, sinks, massive, punct
    assert len(d.imgs) >= 11
    check_findings(d, text, full)
    screenshot(html_path, "report.png", str(tmp_path), height=6000)


def _pct(x):
    return f"{100 * x:.1f} %"


def check_findings(d, text, h5, natural="sink-natural-"):
    """The Findings section opens the page, and states what punctum.literature computes
    from the file (itself checked against numpy in test_literature.py)."""
    from punctum import literature as lit

    assert d.first_section == "findings"
    assert "findings" in d.table_classes, "no Findings table"
    for head in ("metric", "this sweep", "published", "source"):
        assert head in d.table_heads["findings"], head
    nat = lit.sink_share(h5, select=natural)
    rep = lit.sink_share(h5, select=lit.REPEAT_PREFIX)
    assert f"{_pct(nat.share)} [{100 * nat.ci[0]:.1f}–{100 * nat.ci[1]:.1f} %]" in text
    assert f"{_pct(rep.share)} [{100 * rep.ci[0]:.1f}–{100 * rep.ci[1]:.1f} %]" in text
    assert nat.length in text and "Gu et al., ICLR 2025" in text
    assert "LLaMA-3-8B ≈ 99 %, GPT-2-XL ≈ 77 %" in text
    keep = lambda p: not p.startswith(lit.REPEAT_PREFIX)  # noqa: E731
    pv = lit.punct_vs_other(h5, select=keep)
    if pv.knockout_ratio is not None:
        assert "Razzhigaev et al. 2025" in text
        assert f"ratio {pv.knockout_ratio[0]:.3g} [" in text
    if pv.attention_ratio is not None:
        assert f"ratio {pv.attention_ratio[0]:.3g} [" in text
    return nat, rep, pv


@needs_browser
def test_sections_left_out_say_why(tmp_path):
    h5 = str(tmp_path / "plain.h5")
    synth_h5.write(h5, 10, stats=("mass", "last", "resid", "topk"), knockout=False,
                   patching=False)
    html_path = render(h5, str(tmp_path / "plain.html"))
    d, text = check_dom(html_path, str(tmp_path),
                        ["findings", "summary", "sinks", "punct", "kl", "attention"],
                        absent=["knockout", "lens", "patching", "massive"])
    assert "No knockout: the sweep was run without --ablate knockout." in text
    assert "No logit lens: the sweep was run without lens in --stats." in text
    assert ("No massive-activation census: the sweep did not record the stat massive "
            "(resid_max, resid_argmax, resid_median; SPEC §3): add massive to --stats.") in text
    assert "not measured: the sweep did not record the stat massive" in text
    assert "No knockout rows: the sweep was run without --ablate knockout." in text
    # no sink-natural-* records: the sink share is measured on every sequence
    assert "all sequences (no sink-natural-* records)" in text
    h5n = str(tmp_path / "none.h5")
    synth_h5.write(h5n, 6, stats=(), knockout=False, patching=False)
    html_path = render(h5n, str(tmp_path / "none.html"))
    d, text = check_dom(html_path, str(tmp_path), ["findings", "summary", "kl"],
                        absent=["attention", "knockout", "lens", "sinks", "massive", "punct"],
                        images=False)
    assert "the sweep was run without mass or last in --stats" in text
    assert "not measured: the sweep was run without mass in --stats." in text
    assert "No punctuation comparison: the sweep has neither knockout rows nor attention " \
        "statistics." in text


@needs_browser
def test_report_of_in_progress_file_and_view(tmp_path):
    h5 = str(tmp_path / "inprog.h5")
    synth_h5.write(h5, 16, committed=9, positions="all")
    html_path = render(h5, str(tmp_path / "inprog.html"))
    d, text = check_dom(html_path, str(tmp_path), SECTIONS)
    assert "16 pair rows are present, 9 committed" in text
    view = str(tmp_path / "mpi" / "OUT.h5")
    os.makedirs(os.path.dirname(view))
    synth_h5.write_sharded(view, 14, 3, positions="all")
    html_path = render(view, str(tmp_path / "view.html"))
    d, text = check_dom(html_path, str(tmp_path), SECTIONS)
    assert "An MPI view over 3 rank files" in text and "OUT.rank2.h5" in text


def test_cli_errors(tmp_path):
    env = dict(os.environ, PYTHONPATH=PYDIR)
    p = subprocess.run([sys.executable, "-m", "punctum", "report", str(tmp_path / "nope.h5")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1 and "nope.h5" in p.stderr and "Traceback" not in p.stderr
    h5 = str(tmp_path / "s.h5")
    synth_h5.write(h5, 4)
    p = subprocess.run([sys.executable, "-m", "punctum", "info", h5], capture_output=True,
                       text=True, env=env, timeout=120)
    assert p.returncode == 0 and "committed pairs 4" in p.stdout


# ------------------------------------------------------------------------------------
# real engine output (skipped without build/punctum)


def _engine():
    b = os.environ.get("PUNCTUM_BIN") or os.path.join(REPO, "build", "punctum")
    return b if os.path.isfile(b) and os.access(b, os.X_OK) else None


@needs_browser
@pytest.mark.skipif(_engine() is None,
                    reason="engine binary build/punctum (or $PUNCTUM_BIN) is absent; the "
                           "synthetic reports above cover the report code")
def test_report_of_engine_output(tiny_model, tmp_path):
    import test_reader

    m = tiny_model("gpt2")
    out = test_reader.engine_run(m, str(tmp_path), "eng", "--stats", "mass,last,resid,topk,lens",
                                 "--ablate", "knockout", "--positions", "all",
                                 "--patch", "resid")
    html_path = render(out, str(tmp_path / "engine.html"))
    d, text = check_dom(html_path, str(tmp_path), SECTIONS + ["patching"], absent=["massive"])
    assert "gpt2" in text
    screenshot(html_path, "report-engine.png", str(tmp_path))


# ------------------------------------------------------------------------------------
# the bundled literature study on the real model


SMOL_PICK = ("sink-natural-01", "sink-natural-02", "sink-natural-03", "sink-repeat-01",
             "sink-repeat-02", "massive-01", "massive-04")


@needs_browser
def test_report_of_smollm2_literature(punctum, tmp_path):
    """Part of examples/literature.jsonl swept with SmolLM2-135M-Instruct: the Findings
    state what the data show. The stat massive comes from the engine when it writes it,
    else from transformers in float64 (massive_ref.py) on the engine's token rows."""
    import json

    import massive_ref
    from punctum import literature as lit
    from test_text_records import smollm2_dir

    d = smollm2_dir()
    with open(os.path.join(REPO, "examples", "literature.jsonl"), encoding="utf-8") as fh:
        recs = [json.loads(ln) for ln in fh if ln.strip()]
    pairs = str(tmp_path / "lit.jsonl")
    with open(pairs, "w", encoding="utf-8") as fh:
        for r in recs:
            if r["id"] in SMOL_PICK:
                fh.write(json.dumps(r) + "\n")
    out = str(tmp_path / "lit.h5")
    helps = punctum("run", "--help", expect=None, threads=False)
    engine_massive = "massive" in helps.stdout + helps.stderr
    punctum.run(d, pairs, out, "--stats", "mass,last,resid,topk" + (",massive" if
                engine_massive else ""), "--ablate", "knockout", "--positions", "last:6")
    if not engine_massive:
        massive_ref.add_to_file(d, out)
    html_path = render(out, str(tmp_path / "lit.html"))
    d_, text = check_dom(html_path, str(tmp_path),
                         [s for s in SECTIONS if s not in ("kl", "lens")] + ["massive"],
                         absent=["kl", "lens"])   # single prompts: no KL; no lens asked for
    nat, rep, pv = check_findings(d_, text, out)
    # what SmolLM2-135M shows (all 44 prompts give the same picture: see examples/literature.md)
    assert nat.length == rep.length == "T = 64"
    assert 0.5 < nat.share < 0.9 and rep.share == 0
    assert "none or almost none, as Gu et al. found for models with rotary positions" in text
    c = lit.massive_census(out, select=lambda p: not p.startswith(lit.REPEAT_PREFIX))
    first = c.kinds.loc["first"]
    assert c.kinds["carriers"].sum() == 0 and "none in this sweep" in text
    assert first["max_abs"] > 1e4 and 100 < first["max_ratio"] < 1000
    assert f"(dimension {int(first['dim_of_max'])}, layer {int(first['layer_of_max'])})" in text
    assert "outliers of the kind Sun et al. describe, but below their 1000× criterion" in text
    screenshot(html_path, "report-smollm2-literature.png", str(tmp_path), height=6000)
