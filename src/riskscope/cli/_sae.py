"""``riskscope sae``: train sparse autoencoders (wired into the main app by :func:`register`; no logic here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import RiskscopeError

sae_app = typer.Typer(name="sae", help="Sparse autoencoders on one layer's activations.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``sae`` command group to ``app``."""
    from . import _common as c

    @sae_app.command("train")
    def train(
        out_dir: Path = typer.Option(..., "--out", "-o", help="SAE folder (SAELens format + metrics.json); resumed "
                                     "if it holds a checkpoint of the same config"),
        model: str = c.ModelOpt,
        corpus: str = typer.Option("pydocs", "--corpus", help="pydocs (built in: Python docs + stdlib code) | "
                                   "file.txt | file.jsonl | file.parquet | hf:NAME[:SPLIT] (local HF cache)"),
        store: Optional[Path] = typer.Option(None, "--store", help="train from this activation store (cached with "
                                             "--positions all) instead of running the model over --corpus"),
        hook: str = typer.Option("resid_post", help="resid_pre, resid_post, attn_out, mlp_neurons or mlp_out"),
        layer: Optional[int] = typer.Option(None, help="layer (negative ok; default: the middle layer)"),
        arch: str = typer.Option("topk", help="topk | relu | batchtopk"),
        expansion: float = typer.Option(8.0, help="latents per input dimension"),
        k: int = typer.Option(32, help="active latents per token (topk, batchtopk)"),
        l1: float = typer.Option(5.0, "--l1", help="L1 coefficient (relu)"),
        tokens: int = typer.Option(1_000_000, help="training tokens"),
        batch_size: int = typer.Option(4096, help="tokens per optimiser step"),
        lr: float = typer.Option(3e-4, help="Adam learning rate"),
        seed: int = typer.Option(0, help="seed of the weights and of the shuffling"),
        normalize: str = typer.Option("expected_average_only_in", help="expected_average_only_in | none"),
        context: int = typer.Option(128, help="tokens per sequence fed to the model"),
        model_batch: int = typer.Option(16, help="sequences per forward pass"),
        holdout: int = typer.Option(32, help="held-out sequences for evaluation"),
        checkpoint_every: int = typer.Option(262_144, help="tokens between checkpoints (0: only at the end)"),
        no_random_baseline: bool = typer.Option(False, "--no-random-baseline", help="skip the random-init baseline"),
        no_resume: bool = typer.Option(False, "--no-resume", help="start over even if a checkpoint exists"),
        capture_dtype: Optional[str] = typer.Option(None, "--capture-dtype", help="run a copy of the model in this "
                                                    "dtype (bfloat16, float16, float32) to capture the training "
                                                    "activations; metrics use the model as loaded (--dtype)"),
        dtype: str = c.DTypeOpt,
        device: str = c.DeviceOpt,
        trust_remote_code: bool = c.TrustOpt,
        module_paths: Optional[str] = c.PathsOpt,
        json_out: bool = c.JsonOpt,
    ) -> None:
        """Train an SAE (TopK, ReLU-L1 or BatchTopK) with held-out metrics and a random-init baseline."""
        from ..data import Store
        from ..hooks import HookPoint
        from ..sae import SAERunConfig, check_out_dir, load_corpus, train_sae

        check_out_dir(out_dir)
        _config(10 ** 6, arch, expansion, k, l1, tokens, batch_size, lr, seed, normalize, checkpoint_every)  # checks
        point0 = HookPoint(hook, layer if layer is not None else 0)
        SAERunConfig(point=point0, capture_dtype=capture_dtype)  # checks --capture-dtype before the model loads
        if store is not None:  # check the store before loading the model
            st = Store.open(store)
            if st.manifest.get("positions") != "all":
                raise RiskscopeError(f"{store} holds {st.manifest.get('positions')!r} positions; an SAE needs every "
                                     f"token: re-cache with --positions all")
            n_layers = int(st.manifest.get("model", {}).get("n_layers", 0)) or None
            lay = layer if layer is not None else (n_layers // 2 if n_layers else 0)
            lay = lay + n_layers if (lay < 0 and n_layers) else lay
            key = f"{hook}.{lay}"
            if key not in st.manifest["points"]:
                raise RiskscopeError(f"{store} has no point {key}; it holds {', '.join(st.manifest['points'])}")
            _config(int(st.manifest["widths"][key]), arch, expansion, k, l1, tokens, batch_size, lr, seed, normalize,
                    checkpoint_every)  # k >= d_sae fails here, before the model loads
        else:
            load_corpus(corpus).check()
        lm = c.load_lm(model, dtype, device, trust_remote_code, module_paths)
        point = HookPoint(point0.hook, layer if layer is not None else lm.n_layers // 2).normalised(lm)
        cfg = _config(point.width(lm), arch, expansion, k, l1, tokens, batch_size, lr, seed, normalize,
                      checkpoint_every)
        run = SAERunConfig(point=point, corpus=corpus, store=str(store) if store else None, context=context,
                           model_batch=model_batch, holdout=holdout, random_baseline=not no_random_baseline,
                           resume=not no_resume, capture_dtype=capture_dtype)
        with c.progress() as prog:
            tasks: dict[str, int] = {}

            def progress(stage: str, p) -> None:
                if stage not in tasks:
                    tasks[stage] = prog.add_task(stage, total=p.steps)
                prog.update(tasks[stage], completed=p.step,
                            description=f"{stage}: L0 {p.l0:.1f}  FVU {p.fvu:.3f}  dead {p.dead_fraction:.2f}")

            res = train_sae(lm, cfg, run, out_dir, progress=progress)
        m = res.metrics
        summary = {"out": str(out_dir), "point": m["point"], "arch": cfg.arch, "d_sae": cfg.d_sae,
                   "l0": m["held_out"]["l0"], "fvu": m["held_out"]["fvu"], "fvu_legacy": m["held_out"]["fvu_legacy"],
                   "dead_fraction": m["dead"]["fraction"],
                   "ce_loss_recovered_vs_zero": m["splice"]["ce_loss_recovered_vs_zero"],
                   "ce_loss_recovered_vs_mean": m["splice"]["ce_loss_recovered_vs_mean"],
                   "random_init_fvu": (m["random_init"].get("held_out") or {}).get("fvu"),
                   "seconds": m["seconds"], "timing": m["timing"],
                   "random_init_timing": m["random_init"].get("timing")}
        if json_out:
            c.out.print_json(json.dumps(summary))
            return
        c.out.print(f"SAE [bold]{out_dir}[/bold] ({cfg.arch}, {cfg.d_sae} latents at {m['point']}): held-out L0 "
                    f"{summary['l0']:.1f}, FVU {summary['fvu']:.3f} (legacy {summary['fvu_legacy']:.3f}), dead "
                    f"{summary['dead_fraction']:.3f}, CE recovered {_fmt(summary['ce_loss_recovered_vs_zero'])} vs "
                    f"zero / {_fmt(summary['ce_loss_recovered_vs_mean'])} vs mean ablation; random-init model "
                    f"FVU {_fmt(summary['random_init_fvu'])}; {summary['seconds']:.0f} s")

    @sae_app.command("risk")
    def risk(
        sae_dir: Path = typer.Argument(..., help="SAE folder (SAELens or sparsify) of this model"),
        model: str = c.ModelOpt,
        dataset: str = typer.Option("cyber_risk_pairs", "--dataset", help="paired dataset (built-in name or file)"),
        probe: Optional[Path] = typer.Option(None, "--probe", help="the run's probe (a bundle folder or a run folder "
                                             "with probe/); default: a probe fitted on the dataset"),
        pool: str = typer.Option("mean", help="pool a text's latents over its tokens: mean | max | last"),
        fdr: float = typer.Option(0.05, help="false-discovery rate (Benjamini-Hochberg)"),
        ks: str = typer.Option("1,8,32", "--ks", help="latents in the sparse probes, comma-separated"),
        folds: int = typer.Option(5, help="grouped cross-validation folds"),
        n_boot: int = typer.Option(1000, "--n-boot", help="bootstrap resamples for CIs"),
        effect_texts: int = typer.Option(64, "--effect-texts", help="texts of each label the clamping is measured on"),
        random_features: int = typer.Option(5, "--random-features", help="matched-density latents clamped as control"),
        seed: int = typer.Option(0, help="seed of folds, bootstraps and random choices"),
        limit: Optional[int] = typer.Option(None, "--limit", help="use only the first N pairs"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="JSON written (default: SAE_DIR/risk.json)"),
        dtype: str = c.DTypeOpt,
        device: str = c.DeviceOpt,
        trust_remote_code: bool = c.TrustOpt,
        module_paths: Optional[str] = c.PathsOpt,
        json_out: bool = c.JsonOpt,
    ) -> None:
        """Risk features: latents that tell risky texts from their twins, probe alignment, sparse probes, clamping."""
        from .._io import atomic_json
        from ..data import load_dataset
        from ..probes import Probe
        from ..sae import RiskConfig, check_sae_width, load_sae, paired_rows, read_density, risk_features, sae_point

        sae, cfg_json = load_sae(sae_dir)
        point = sae_point(cfg_json, sae_dir / "cfg.json")
        try:
            k_list = tuple(int(x) for x in ks.split(",") if x.strip())
        except ValueError:
            raise RiskscopeError(f"--ks must be comma-separated integers, got {ks!r}") from None
        rcfg = RiskConfig(pool=pool, fdr=fdr, ks=k_list, folds=folds, n_boot=n_boot, effect_texts=effect_texts,
                          n_random_features=random_features, seed=seed)
        ds = load_dataset(dataset).limit(limit)
        paired_rows(ds)  # enough complete pairs, before the model loads
        the_probe = None
        if probe is not None:
            where = probe / "probe" if (probe / "probe" / "bundle.json").is_file() else probe
            the_probe = Probe.load(where)
        target = out if out is not None else sae_dir / "risk.json"
        lm = c.load_lm(model, dtype, device, trust_remote_code, module_paths)
        check_sae_width(sae, point.width(lm), f"{model}'s {point}")
        density = read_density(sae_dir)
        meta = cfg_json.get("metadata") or {}
        with c.progress() as prog:
            task = prog.add_task("risk features", total=None)
            res = risk_features(lm, sae, point, ds, rcfg, probe=the_probe,
                                density_F=None if density is None else density.numpy(),
                                prepend_bos=bool(meta.get("prepend_bos", True)),
                                progress=lambda s: prog.update(task, description=s))
        atomic_json(target, {"format": "riskscope-sae-risk/1", "sae": str(sae_dir), "model": lm.model_id,
                             **res.to_dict(), "latents": res.latents()})
        if json_out:
            c.out.print_json(json.dumps({"out": str(target), "reading": res.summary["reading"]}))
            return
        c.out.print(f"risk features of [bold]{sae_dir}[/bold] -> {target}")
        for line in res.summary["reading"]:
            c.out.print(f"  {line}", markup=False)

    @sae_app.command("browse")
    def browse(
        sae_dir: Path = typer.Argument(..., help="SAE folder (SAELens or sparsify) of this model"),
        model: str = c.ModelOpt,
        corpus: str = typer.Option("pydocs", "--corpus", help="text whose tokens are read (as for train)"),
        dataset: Optional[str] = typer.Option("cyber_risk_pairs", "--dataset",
                                              help="also read this dataset's texts ('' for none)"),
        tokens: int = typer.Option(65_536, help="corpus tokens read"),
        context: int = typer.Option(64, help="tokens per corpus window"),
        contexts: int = typer.Option(5, help="top contexts kept per latent"),
        radius: int = typer.Option(10, help="tokens shown either side of a context's peak"),
        batch_size: int = typer.Option(16, help="windows per forward"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML written (default: SAE_DIR/browser.html)"),
        dtype: str = c.DTypeOpt,
        device: str = c.DeviceOpt,
        trust_remote_code: bool = c.TrustOpt,
        module_paths: Optional[str] = c.PathsOpt,
        json_out: bool = c.JsonOpt,
    ) -> None:
        """Write an offline HTML page: metrics, risk features (if risk.json) and a browser of every latent."""
        from ..data import load_dataset
        from ..report import write_sae_page
        from ..sae import browser_data, check_sae_width, corpus_windows, load_corpus, load_sae, read_density, sae_point, text_windows

        sae, cfg_json = load_sae(sae_dir)
        point = sae_point(cfg_json, sae_dir / "cfg.json")
        if tokens < 0 or context < 8 or contexts < 1 or radius < 0 or batch_size < 1:
            raise RiskscopeError("--tokens must be >= 0, --context >= 8, --contexts and --batch-size >= 1, --radius >= 0")
        corp = load_corpus(corpus) if tokens else None
        if corp is not None:
            corp.check()
        ds = load_dataset(dataset) if dataset else None
        risk = None
        if (sae_dir / "risk.json").is_file():
            risk = json.loads((sae_dir / "risk.json").read_text(encoding="utf-8")).get("latents")
            if risk is not None and any(len(v) != sae.d_sae for v in risk.values()):
                raise RiskscopeError(f"{sae_dir / 'risk.json'}: field latents does not have {sae.d_sae} entries")
        lm = c.load_lm(model, dtype, device, trust_remote_code, module_paths)
        check_sae_width(sae, point.width(lm), f"{model}'s {point}")
        prepend = bool((cfg_json.get("metadata") or {}).get("prepend_bos", True))
        windows = text_windows(lm, ds.texts, prepend) if ds is not None else []
        if corp is not None:
            n = 0
            for w in corpus_windows(lm, corp, context, prepend):
                windows.append(w)
                n += len(w.ids) - w.skip
                if n >= tokens:
                    break
        if not windows:
            raise RiskscopeError("nothing to read: give --tokens > 0 or a --dataset")
        density = read_density(sae_dir)
        with c.progress() as prog:
            prog.add_task(f"reading {len(windows)} windows", total=None)
            data = browser_data(lm, sae, point, windows, contexts=contexts, radius=radius, batch_size=batch_size,
                                density_F=None if density is None else density.numpy(), risk=risk,
                                meta={"corpus": corpus if corp is not None else dataset, "dataset": dataset,
                                      "model": lm.model_id})
        path = write_sae_page(sae_dir, data, out)
        if json_out:
            c.out.print_json(json.dumps({"out": str(path), "latents": sae.d_sae, "tokens": data["tokens_read"]}))
            return
        c.out.print(f"feature browser of [bold]{sae_dir}[/bold] ({sae.d_sae} latents, {data['tokens_read']} tokens) "
                    f"-> {path}")

    app.add_typer(sae_app, name="sae")


def _config(d_in, arch, expansion, k, l1, tokens, batch_size, lr, seed, normalize, checkpoint_every):
    from ..sae import SAEConfig

    return SAEConfig(d_in=d_in, expansion=expansion, arch=arch, k=k, l1_coefficient=l1, tokens=tokens,
                     batch_size=batch_size, lr=lr, seed=seed, normalize=normalize,
                     checkpoint_every=checkpoint_every)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


__all__ = ["register", "sae_app"]
