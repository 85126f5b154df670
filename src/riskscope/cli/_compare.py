"""``riskscope compare``: compare two models (wired into the main app by :func:`register`; no logic here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import RiskscopeError

compare_app = typer.Typer(name="compare", help="Compare two models' representations of the same texts.",
                          no_args_is_help=True)
RANDOM_HELP = "random-init (as the second --model: a randomly initialised copy of the first)"


def register(app: typer.Typer) -> None:
    """Add the ``compare`` command group to ``app``."""
    from . import _common as c

    @compare_app.command("layers")
    def layers(
        out_dir: Path = typer.Option(..., "--out", "-o", help="output folder: comparison.json, report.html, "
                                     "stores/ (resumed if re-run with the same inputs)"),
        models: Optional[List[str]] = typer.Option(None, "--model", "-m", help="give twice: model A, then model "
                                                   "B; " + c.MODEL_HELP + "; or " + RANDOM_HELP),
        stores: Optional[List[Path]] = typer.Option(None, "--store", help="give twice instead of --model: two "
                                                    "stores cached on the same dataset (last or mean positions)"),
        baseline_store: Optional[Path] = typer.Option(None, "--baseline-store", help="with --store: a store of a "
                                                      "random-init copy of A, for the random-network baseline"),
        dataset: str = c.DatasetOpt,
        limit: Optional[int] = c.LimitOpt,
        metric: str = typer.Option("cka", help="cka (debiased linear CKA) | svcca | rsa"),
        hook: str = typer.Option("resid_post", help="hook compared at every layer"),
        readout: str = typer.Option("mean", help="one row per text: mean (over its tokens) | last (token), works "
                                    "across tokenizers; or tokens: every token but each text's first is a row "
                                    "(one tokenizer only)"),
        layers_opt: Optional[str] = typer.Option(None, "--layers", help="layers of both models (default: all); "
                                                 "e.g. 0,5,-1 or 10-20"),
        perms: int = typer.Option(100, "--perms", help="shuffles of B's rows behind each cell's null and p-value"),
        block: int = typer.Option(256, help="rows per block of the streamed CKA (sets its memory)"),
        seed: int = typer.Option(0, help="seed of the shuffles and of the random-init copy"),
        no_random_init: bool = typer.Option(False, "--no-random-init", help="skip the random-init baseline"),
        batch_size: int = c.BatchOpt,
        dtype: str = c.DTypeOpt,
        device: str = c.DeviceOpt,
        trust_remote_code: bool = c.TrustOpt,
        json_out: bool = c.JsonOpt,
    ) -> None:
        """Layers(A) x layers(B) similarity on the same texts, with a shuffled-rows null per cell and a random-init
        baseline; writes comparison.json and an offline report.html."""
        from .._io import OutputFiles
        from ..compare import RANDOM_INIT, LayerCompareConfig, compare_layers
        from ..report import write_compare_report

        cfg = LayerCompareConfig(metric=metric, hook=hook, readout=readout, n_perm=perms, block=block, seed=seed,
                                 random_init=not no_random_init, batch_size=batch_size)  # checks the values
        models, stores = list(models or []), list(stores or [])
        if bool(models) == bool(stores):
            raise RiskscopeError("give --model twice (A then B) or --store twice, not both")
        if len(models or stores) != 2:
            flag = "--model" if models else "--store"
            raise RiskscopeError(f"{flag} must be given exactly twice (A then B), got {len(models or stores)}")
        files = OutputFiles(out_dir, ["comparison.json", "report.html"], manifest="compare_manifest.json")
        if stores:
            result = _from_stores(stores, baseline_store, layers_opt, cfg, c)
        else:
            if models[0] == RANDOM_INIT:
                raise RiskscopeError(f"--model {RANDOM_INIT} can only be model B (a random-init copy of model A)")
            from ..data import load_dataset

            data = load_dataset(dataset).limit(limit)
            cfg.check_rows(len(data.rows), f"dataset {data.name}")  # before any model loads
            lay = c.layers_or_none(layers_opt)
            lm_a = c.load_lm(models[0], dtype, device, trust_remote_code)
            lm_b = models[1] if models[1] == RANDOM_INIT else c.load_lm(models[1], dtype, device, trust_remote_code)
            with c.progress() as prog:
                tasks: dict[str, int] = {}

                def progress(stage: str, done: int, total: int) -> None:
                    if stage not in tasks:
                        tasks[stage] = prog.add_task(stage, total=total)
                    prog.update(tasks[stage], completed=done, total=total)

                result = compare_layers(lm_a, lm_b, data, out_dir, cfg, lay, lay, progress)
        result.save(files.path("comparison.json"))
        write_compare_report(out_dir, files.path("report.html"))
        files.finish()
        m = result.main
        summary = {"out": str(out_dir), "model_a": result.model_a, "model_b": result.model_b, "metric": cfg.metric,
                   "shape": list(m.values_AB.shape), "max": float(m.values_AB.max()),
                   "cells_p_below_0.05": int((m.p_AB < 0.05).sum()) if m.p_AB is not None else None,
                   "random_init_max": float(result.random_init.values_AB.max()) if result.random_init else None,
                   "seconds_compare": result.info.get("seconds_compare")}
        if json_out:
            c.print_json(summary)
            return
        c.out.print(f"{cfg.metric} {result.model_a} x {result.model_b}: {m.values_AB.shape[0]}x{m.values_AB.shape[1]} "
                    f"layers, max {summary['max']:.3f}; {summary['cells_p_below_0.05']} cell(s) beat the shuffled "
                    f"null at p<0.05; random-init max {_fmt(summary['random_init_max'])}; "
                    f"report {out_dir / 'report.html'}", highlight=False)

    @compare_app.command("transfer")
    def transfer(
        stores: List[Path] = typer.Option(..., "--store", help="give twice: the store of A, then of B (same "
                                          "dataset, labelled, one row per text)"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="write the results as JSON here"),
        hook: str = typer.Option("resid_post", help="hook compared"),
        pairs: int = typer.Option(5, "--pairs", help="layer pairs at matched relative depths (first, last and "
                                  "evenly between)"),
        folds: int = c.FoldsOpt,
        n_bootstrap: int = c.BootstrapOpt,
        seed: int = c.SeedOpt,
        json_out: bool = c.JsonOpt,
    ) -> None:
        """Carry A's risk probe through a ridge map (B -> A) to B's texts; AUC against B's own probe and
        against a map fitted on shuffled rows, on folds grouped by pair."""
        from .._io import check_output_file
        from ..compare import StoreSource, check_same_rows, matched_layers, risk_transfer

        if len(stores) != 2:
            raise RiskscopeError(f"--store must be given exactly twice (A then B), got {len(stores)}")
        if out is not None:
            check_output_file(out)
        a, b = StoreSource(stores[0]), StoreSource(stores[1])
        check_same_rows(a, b)
        ka = sorted((k for k in a.layers if k.rpartition(".")[0] == hook), key=lambda k: int(k.rpartition(".")[2]))
        kb = sorted((k for k in b.layers if k.rpartition(".")[0] == hook), key=lambda k: int(k.rpartition(".")[2]))
        if not ka or not kb:
            src = stores[0] if not ka else stores[1]
            raise RiskscopeError(f"{src} has no {hook} point")
        y, groups = a.store.labels, [p if p is not None else f"row{i}" for i, p in enumerate(a.store.pair_ids)]
        results = []
        for i, j in matched_layers(len(ka), len(kb), pairs):
            r = risk_transfer(a.layer(ka[i]), b.layer(kb[j]), y, groups, folds, n_boot=n_bootstrap, seed=seed,
                              layer_a=ka[i], layer_b=kb[j])
            results.append(r.to_dict())
            if not json_out:
                au = r.auc
                c.out.print(f"{ka[i]} -> {kb[j]}: transfer AUC {au['transfer']:.3f} | B's own probe "
                            f"{au['b_own']:.3f} | A's own {au['a_own']:.3f} | shuffled map "
                            f"{au['shuffled_map']:.3f} | map R2 {r.map_r2:.3f}", highlight=False)
        payload = {"format": "riskscope-compare-transfer/1", "store_a": str(stores[0]), "store_b": str(stores[1]),
                   "results": results}
        c.save_json(out, payload)
        if json_out:
            c.print_json(payload)

    @compare_app.command("features")
    def features(
        sae_a: Path = typer.Argument(..., help="SAE folder A (riskscope's, SAELens or sparsify)"),
        sae_b: Path = typer.Argument(..., help="SAE folder B"),
        out_dir: Path = typer.Option(..., "--out", "-o", help="output folder: features.json, report.html"),
        dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="read this dataset's texts (instead of "
                                              "--corpus)"),
        limit: Optional[int] = c.LimitOpt,
        corpus: Optional[str] = typer.Option(None, "--corpus", help="text read (default pydocs): pydocs | file.txt "
                                             "| file.jsonl | file.parquet | hf:NAME[:SPLIT]"),
        tokens: int = typer.Option(65_536, help="corpus tokens read (per-text mode: corpus texts until this many "
                                   "tokens of A)"),
        context: int = typer.Option(128, help="tokens per corpus window"),
        per_text: bool = typer.Option(False, "--per-text", help="correlate per-text mean latents (needed when the "
                                      "two models' tokenizers differ)"),
        shuffles: int = typer.Option(100, "--shuffles", help="shuffled pairings behind the SVCCA and RSA nulls"),
        model_a: Optional[str] = typer.Option(None, "--model-a", help="model of SAE A (default: the one its folder "
                                              "records)"),
        model_b: Optional[str] = typer.Option(None, "--model-b", help="model of SAE B (default: the one its folder "
                                              "records)"),
        min_fires: int = typer.Option(10, "--min-fires", help="junk: latents firing on fewer rows"),
        max_density: float = typer.Option(0.1, "--max-density", help="junk: latents firing on a larger share of "
                                          "tokens"),
        max_token_share: float = typer.Option(0.9, "--max-token-share", help="junk: latents with this share of "
                                              "their firings on one token id (1 disables)"),
        max_first_share: float = typer.Option(0.5, "--max-first-share", help="junk: latents with this share of "
                                              "their firings on a window's first token (1 disables)"),
        max_row_share: float = typer.Option(0.5, "--max-row-share", help="junk: latents with this share of their "
                                            "summed squared activation on one row (1 disables)"),
        top: int = typer.Option(20, "--top", help="best-matched pairs listed with their contexts"),
        batch_size: int = typer.Option(16, "--batch-size", help="windows or texts per forward pass"),
        seed: int = typer.Option(0, help="seed of the shuffles"),
        dtype: str = c.DTypeOpt,
        device: str = c.DeviceOpt,
        trust_remote_code: bool = c.TrustOpt,
        json_out: bool = c.JsonOpt,
    ) -> None:
        """Feature universality of two SAEs: pair latents by activation correlation over the same tokens, drop
        junk latents, SVCCA / RSA of the paired decoder rows against shuffled pairings; features.json +
        report.html."""
        from .._io import OutputFiles, check_output_dir
        from ..compare import FeatureCompareConfig, check_inputs, compare_features, open_sae, sae_model
        from ..report import write_features_report
        from ..sae import load_corpus, random_init_copy

        cfg = FeatureCompareConfig(tokens=tokens, context=context, per_text=per_text, batch_size=batch_size,
                                   n_shuffles=shuffles, min_fires=min_fires, max_density=max_density,
                                   max_token_share=max_token_share, max_first_share=max_first_share,
                                   max_row_share=max_row_share,
                                   top_pairs=top, seed=seed)
        if dataset and corpus:
            raise RiskscopeError("give --dataset or --corpus, not both")
        check_output_dir(out_dir)
        a, b = open_sae(sae_a), open_sae(sae_b)
        spec_a, spec_b = sae_model(a, model_a), sae_model(b, model_b)
        texts = corp = None
        if dataset:
            from ..data import load_dataset

            texts = load_dataset(dataset).limit(limit).texts
        else:
            corp = load_corpus(corpus or "pydocs")
            corp.check()
        loaded: dict = {}

        def lm_for(spec):
            name, rand_seed = spec
            if name not in loaded:
                loaded[name] = c.load_lm(name, dtype, device, trust_remote_code)
            if rand_seed is None:
                return loaded[name]
            if spec not in loaded:
                loaded[spec] = random_init_copy(loaded[name], rand_seed)
            return loaded[spec]

        lm_a, lm_b = lm_for(spec_a), lm_for(spec_b)
        check_inputs(a, lm_a, b, lm_b, cfg)  # widths, tokenizers: before any forward pass or file
        files = OutputFiles(out_dir, ["features.json", "report.html"], manifest="compare_manifest.json")
        with c.progress() as prog:
            task = prog.add_task("features", total=None)
            res = compare_features(a, lm_a, b, lm_b, cfg, corpus=corp, texts=texts,
                                   progress=lambda s: prog.update(task, description=s))
        res.save(files.path("features.json"))
        write_features_report(out_dir, files.path("report.html"))
        files.finish()
        s = res.summary()
        pr = res.pairing
        summary = {"out": str(out_dir), "mode": res.mode, **{k: s[k] for k in ("kept_a", "kept_b", "mean_corr",
                                                                              "mutual", "n_rows")},
                   "svcca": pr.svcca.to_dict() if pr.svcca else None, "rsa": pr.rsa.to_dict() if pr.rsa else None}
        if json_out:
            c.print_json(summary)
            return
        sv = pr.svcca
        c.out.print(f"{a.path.name} x {b.path.name} ({res.mode}, {s['n_rows']} rows): {s['kept_a']}/{s['latents_a']} "
                    f"latents of A kept, mean best correlation {_fmt(s['mean_corr'])}; SVCCA of paired decoder rows "
                    f"{_fmt(sv.value if sv else None)} (shuffled pairings {_fmt(sv.null_mean if sv else None)}, "
                    f"p {_fmt(sv.p if sv else None)}); report {out_dir / 'report.html'}", highlight=False)

    app.add_typer(compare_app, name="compare")


def _from_stores(stores: list[Path], baseline: Optional[Path], layers_opt: Optional[str], cfg, c):
    """The comparison of two existing stores (no model loads)."""
    import time
    from dataclasses import replace

    from ..compare import LayerComparison, StoreSource, TokenSource, check_same_rows, compare_sources
    from ..data import Store

    def pick(path: Path) -> StoreSource | TokenSource:
        st = Store.open(path)
        points = list(st.manifest["points"])
        keys = [k for k in points if k.rpartition(".")[0] == cfg.hook]
        if not keys:
            raise RiskscopeError(f"{st.root} has no {cfg.hook} point; it holds {', '.join(points)}")
        if layers_opt:
            n = int(st.manifest.get("model", {}).get("n_layers") or len(keys))
            wanted = [f"{cfg.hook}.{i if i >= 0 else n + i}" for i in c.parse_layers(layers_opt, n)]
            missing = [k for k in wanted if k not in keys]
            if missing:
                raise RiskscopeError(f"{st.root} has no point {missing[0]}; it holds {', '.join(keys)}")
            keys = wanted
        keys.sort(key=lambda k: int(k.rpartition(".")[2]))
        if st.manifest.get("positions") == "all":  # token-aligned rows (one tokenizer; checked with the rows)
            return TokenSource(st, keys, name=str(st.root))
        return StoreSource(st, keys, name=str(st.root))

    a, b = (pick(s) for s in stores)
    check_same_rows(a, b)
    pos = {a.store.manifest["positions"], b.store.manifest["positions"]}
    if len(pos) != 1:
        raise RiskscopeError(f"{stores[0]} and {stores[1]} hold different readouts ({' and '.join(sorted(pos))}); "
                             f"cache both with the same --positions")
    p = pos.pop()
    cfg = replace(cfg, readout="tokens" if p == "all" else p)
    cfg.check_rows(a.n_rows, str(stores[0]))
    rand = pick(baseline) if baseline is not None and cfg.random_init else None
    if rand is not None:
        check_same_rows(rand, b)
    t0 = time.perf_counter()
    main = compare_sources(a, b, cfg)
    base = compare_sources(rand, b, cfg) if rand is not None else None
    ma, mb = a.store.manifest.get("model", {}), b.store.manifest.get("model", {})
    info = {"dataset": a.store.manifest.get("dataset", {}).get("name"), "n_texts": len(a.store.rows),
            "n_rows": a.n_rows,
            "stores": {"a": str(stores[0]), "b": str(stores[1]), "random_init": str(baseline) if rand else None},
            "seconds_compare": round(time.perf_counter() - t0, 2)}
    name_a = ma.get("model") or str(stores[0])
    name_b = mb.get("model") or str(stores[1])
    return LayerComparison(cfg, str(name_a), str(name_b), main, base, info)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


__all__ = ["compare_app", "register"]
