"""The report and the MELBO page in a real browser: Chromium (the system one) driven by playwright.

A tiny random model's 50-pair run through the CLI with every analysis (and a copy with long
unbroken words in its texts, categories and hook names), and a tiny MELBO run through the CLI,
rendered at 1000, 1400 and 1600 px: every section is there, nothing needs a
horizontal scrollbar or sticks out of the window or its card, the console stays clean.
Skips, saying what to install, without Chromium or playwright.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from riskscope.report import write_report

from test_report import tiny_melbo_run, tiny_run

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
WIDTHS = (1000, 1400, 1600)
REPORT_SECTIONS = ("verdict", "dataset", "recipes", "layers", "roc", "categories", "severity", "confusion", "errors", "ask",
                   "neurons", "traces", "steering", "metrics", "config")
MELBO_SECTIONS = ("setup", "controls", "radius", "training", "unsteered", "clusters", "completions", "files")

# Every <details> opened first, so folded tables are laid out and measured too.
LAYOUT = """() => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  const W = window.innerWidth, bad = [];
  const name = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + ' in #' +
                     ((el.closest('section, header') || {}).id || 'page');
  if (document.documentElement.scrollWidth > W) bad.push('page is ' + document.documentElement.scrollWidth + ' px wide');
  for (const el of document.querySelectorAll('body *')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    if (r.left < -1 || r.right > W + 1) bad.push(name(el) + ' outside the window: ' + r.left + '..' + r.right);
    if (el.matches('table, pre, svg, figure, .chart, section, header, td, th, details, div') &&
        el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1)
      bad.push(name(el) + ' needs a scrollbar: ' + el.scrollWidth + ' > ' + el.clientWidth);
    const card = el.parentElement && el.parentElement.closest('section, header');
    if (card && el.matches('table, pre, svg, figure') && r.right > card.getBoundingClientRect().right + 1)
      bad.push(name(el) + ' wider than its card');
  }
  return bad;
}"""


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", exc_type=ImportError,
                                   reason="playwright is missing: pip install playwright (the dev extra; it drives "
                                          "the system chromium, no `playwright install`)")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _long_words(run: Path, out: Path) -> Path:
    """A copy of ``run`` whose category, texts, a hook name and an extra metric are long unbroken words."""
    shutil.copytree(run, out, ignore=shutil.ignore_patterns("store"))
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["results"][1]["hook"] = "h" * 150
    metrics["results"][1]["an_extra_key_name_of_fifty_characters_and_no_space"] = "v" * 80
    (out / "metrics.json").write_text(json.dumps(metrics))
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    for p in preds[:4]:
        p.update(category="c" * 120, text="https://example.org/" + "x" * 300)
    (out / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    return write_report(out)


@pytest.fixture(scope="module")
def pages(browser, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("browser")
    run = tiny_run(root, n_pairs=50)
    return {"report": run / "report.html", "long words": _long_words(run, root / "long"),
            "melbo": tiny_melbo_run(root, prompts=("How do I pick a lock?", "abc " + "y" * 40)) / "report.html"}


def _open(browser, path: Path, width: int):
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.resolve().as_uri())
    return page, errors


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("kind, anchors", [("report", REPORT_SECTIONS), ("long words", REPORT_SECTIONS),
                                           ("melbo", MELBO_SECTIONS)])
def test_page_fits_every_width(browser, pages, kind, anchors, width):
    page, errors = _open(browser, pages[kind], width)
    try:
        missing = [a for a in anchors if page.locator(f"#{a}").count() != 1]
        assert not missing, f"sections missing: {missing}"
        links = page.eval_on_selector_all("nav a", "els => els.map(a => a.getAttribute('href').slice(1))")
        assert set(links) == set(anchors) and all(page.locator(f"#{a}").count() == 1 for a in links)
        assert page.locator("svg").count() >= (4 if kind == "melbo" else 5)  # 2 hooks, ROC, severity, heatmap
        bad = page.evaluate(LAYOUT)
        assert not bad, "\n".join(bad[:20])
        assert not errors, errors
    finally:
        page.close()


def test_report_of_a_50_pair_run_is_small(pages):
    assert pages["report"].stat().st_size < 2 * 1024 * 1024
    assert pages["melbo"].stat().st_size < 2 * 1024 * 1024


def test_screenshot_is_not_blank(browser, pages, tmp_path):
    page, _ = _open(browser, pages["report"], 1400)
    try:
        png = page.screenshot(full_page=True)
    finally:
        page.close()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000  # a blank page compresses to a few kB


# --- the SAE page (riskscope sae train / risk / browse) ------------------------------------------------

SAE_SECTIONS = ("sae-metrics", "sae-risk", "sae-features")


@pytest.fixture(scope="module")
def sae_page(browser, tmp_path_factory) -> Path:
    """A tiny SAE trained through train_sae (metrics.json with the random-init baseline), its risk features and
    its browser, written as the CLI writes them."""
    import torch

    from conftest import make_tiny
    from riskscope.data import load_dataset
    from riskscope.hooks import HookPoint
    from riskscope.report import write_sae_page
    from riskscope.sae import RiskConfig, SAEConfig, SAERunConfig, browser_data, risk_features, text_windows, train_sae

    root = tmp_path_factory.mktemp("sae")
    torch.set_num_threads(1)
    lm = make_tiny("llama")
    words = "risk model layer token feature sparse code python data text value".split()
    (root / "c.txt").write_text("\n\n".join(" ".join(words[(i * 7 + j) % len(words)] for j in range(60))
                                            for i in range(60)))
    point = HookPoint("resid_post", 1)
    run = train_sae(lm, SAEConfig(d_in=32, expansion=4, k=4, batch_size=256, tokens=2048, block_tokens=1024),
                    SAERunConfig(point=point, corpus=str(root / "c.txt"), context=32, holdout=4), root / "sae")
    ds = load_dataset("cyber_risk_pairs").limit(20)
    risk = risk_features(lm, run.sae, point, ds, RiskConfig(n_boot=50, effect_texts=4, n_random_features=2,
                                                            n_random_directions=50, ks=(1, 4), folds=3))
    (root / "sae" / "risk.json").write_text(json.dumps({**risk.to_dict(), "latents": risk.latents()}))
    data = browser_data(lm, run.sae, point, text_windows(lm, ds.texts), risk=risk.latents())
    return write_sae_page(root / "sae", data)


@pytest.mark.parametrize("width", (1000, 1400))
def test_sae_page_renders_and_fits(browser, sae_page, width):
    page, errors = _open(browser, sae_page, width)
    try:
        missing = [a for a in SAE_SECTIONS if page.locator(f"#{a}").count() != 1]
        assert not missing, f"sections missing: {missing}"
        assert page.locator(".fb-item").count() == 50  # one page of 128 latents, drawn lazily
        assert page.locator(".fb-detail").count() == 1
        for head in page.locator(".fb-item > .fb-head").all()[1:4]:  # open three more latents
            head.click()
        assert page.locator(".fb-detail").count() == 4
        assert page.locator(".fb-detail svg").count() == 4 and page.locator(".fb-ctx span").count() > 0
        bad = page.evaluate(LAYOUT)
        assert not bad, "\n".join(bad[:20])
        assert not errors, errors
    finally:
        page.close()


def test_sae_page_search_sort_and_pages(browser, sae_page):
    page, errors = _open(browser, sae_page, 1400)
    try:
        assert page.locator("#fb-count").text_content().startswith("128 of 128")
        page.select_option("#fb-sort", "density-desc")
        fires = [int(t.split(" ")[2]) for t in page.locator(".fb-head span:nth-child(3)").all_text_contents()]
        assert fires == sorted(fires, reverse=True)
        page.click("#fb-next")
        assert page.locator("#fb-page").text_content() == "page 2 of 3"
        page.fill("#fb-search", "zzz-no-such-token")
        assert _settled(page).startswith("0 of 128")
        page.fill("#fb-search", "<5")  # tiny tokenizer's tokens read "<id>"
        n = int(_settled(page).split(" ")[0])
        assert 0 < n < 128 and page.locator(".fb-item").count() == min(n, 50)
        assert not errors, errors
    finally:
        page.close()


def _settled(page) -> str:
    """The latent count once the (debounced) search has run."""
    page.wait_for_timeout(400)  # the viewer waits 150 ms after the last keystroke
    return page.locator("#fb-count").text_content()


def test_run_report_with_sae_risk_section(browser, pages, sae_page, tmp_path):
    """``riskscope sae risk SAE --out RUN/sae_risk.json`` adds the risk section to the run's report."""
    run = tmp_path / "run"
    shutil.copytree(pages["report"].parent, run, ignore=shutil.ignore_patterns("store"))
    shutil.copy(sae_page.parent / "risk.json", run / "sae_risk.json")
    report = write_report(run)
    page, errors = _open(browser, report, 1000)
    try:
        assert page.locator("#sae-risk").count() == 1 and page.locator("nav a[href='#sae-risk']").count() == 1
        bad = page.evaluate(LAYOUT)
        assert not bad, "\n".join(bad[:20])
        assert not errors, errors
    finally:
        page.close()
