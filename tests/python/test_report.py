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

SECTIONS = ["summary", "kl", "attention", "knockout", "lens"]


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

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids[a["id"]] = tag
        if tag == "img":
            self.imgs.append(a)
        for k in ("src", "href"):
            v = a.get(k) or ""
            if v.startswith(("http:", "https:", "//")) or (tag in ("script", "link") and v):
                self.external.append((tag, v))

    def handle_data(self, data):
        self.text.append(data)


def png_size(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def check_dom(html_path, tmp, expect=SECTIONS, absent=()):
    dom_html = browser(["--dump-dom", "file://" + os.path.abspath(html_path)], tmp)
    d = DOM()
    d.feed(dom_html)
    for s in expect:
        assert d.ids.get(s) == "section", f"section #{s} missing from the rendered page"
    for s in absent:
        assert s not in d.ids, f"#{s} should have been left out"
        assert f"{s}-missing" in d.ids, f"no line saying why #{s} was left out"
    assert not d.external, f"the report fetches external resources: {d.external}"
    assert d.imgs, "no images"
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
    synth_h5.write(h5, 40, positions="all", n_layers=6, n_heads=4, n_failed=3,
                   stats=("mass", "last", "resid", "topk", "lens"))
    return h5


@needs_browser
def test_full_report_in_browser(full, tmp_path):
    html_path = render(full, str(tmp_path / "report.html"), "--top", "8")
    with open(html_path, encoding="utf-8") as fh:
        src = fh.read()
    assert "<script" not in src and "http://" not in src and "https://" not in src
    d, text = check_dom(html_path, str(tmp_path), SECTIONS + ["patching"])
    assert "3 skipped" in text.lower() or "skipped" in text.lower()
    for msg in ("line 2:", "pairs that differ most", "Attention knockout", "Logit lens"):
        assert msg in text, msg
    # summary, KL (2), attention (3 pairs + profile), knockout, lens, patching
    assert len(d.imgs) >= 8
    screenshot(html_path, "report.png", str(tmp_path))


@needs_browser
def test_sections_left_out_say_why(tmp_path):
    h5 = str(tmp_path / "plain.h5")
    synth_h5.write(h5, 10, stats=("mass", "last", "resid", "topk"), knockout=False,
                   patching=False)
    html_path = render(h5, str(tmp_path / "plain.html"))
    d, text = check_dom(html_path, str(tmp_path), ["summary", "kl", "attention"],
                        absent=["knockout", "lens", "patching"])
    assert "No knockout: the sweep was run without --ablate knockout." in text
    assert "No logit lens: the sweep was run without lens in --stats." in text
    h5n = str(tmp_path / "none.h5")
    synth_h5.write(h5n, 6, stats=(), knockout=False, patching=False)
    html_path = render(h5n, str(tmp_path / "none.html"))
    d, text = check_dom(html_path, str(tmp_path), ["summary", "kl"],
                        absent=["attention", "knockout", "lens"])
    assert "the sweep was run without mass or last in --stats" in text


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
    d, text = check_dom(html_path, str(tmp_path), SECTIONS + ["patching"])
    assert "gpt2" in text
    screenshot(html_path, "report-engine.png", str(tmp_path))
