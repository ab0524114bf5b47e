"""ropeext report: gather every stage's metrics into results/report (markdown, CSV, PNG)."""

from __future__ import annotations

from pathlib import Path

from ropeext.commands._common import add_config_args, add_tracking_args, config_from_args

COMMAND = ("report",)
HELP = "write the report: perplexity-by-length table and plot, disturbance table, other evaluations"


def add_arguments(parser) -> None:
    add_config_args(parser)
    parser.add_argument("--ppl", nargs="+", default=[], help="metrics.json files of `ropeext eval ppl`")
    parser.add_argument("--compare", nargs="*", default=[], help="table.csv files of `ropeext compare`")
    parser.add_argument("--output-dir", required=True)
    add_tracking_args(parser)


def run(args) -> None:
    import pandas as pd

    from ropeext import tracking
    from ropeext.report.plots import plot_lines
    from ropeext.report.summary import load_metrics, markdown_table, phenomenon, ppl_table

    config = config_from_args(args)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    L = config["model"]["train_length"]
    targets = config["extension"]["target_lengths"]
    with tracking.stage_run("report", config=config, variant=args.variant, enabled=not args.no_mlflow) as run_:
        sections = [f"# ropeext report: {config['experiment']}", "",
                    f"Model `{config['model']['path'] or config['model']['name']}` pre-trained at L = {L}; "
                    f"extended to L' = {', '.join(map(str, targets))} with methods "
                    f"{', '.join(config['extension']['methods'])} and layouts {', '.join(config['extension']['layouts'])}. "
                    "Variants named `model-method-target-layout`; `noft` = the method applied without fine-tuning.", ""]
        if args.ppl:
            df = ppl_table(load_metrics(args.ppl))
            df.to_csv(out / "ppl.csv")
            lengths = [c for c in df.columns if isinstance(c, int)]
            series = {v: (lengths, [row[c] for c in lengths]) for v, row in df.iterrows()}
            plot_lines(series, out / "ppl.png", xlabel="context length (tokens)", ylabel="perplexity",
                       logx=True, logy=True, title="Perplexity by context length",
                       vlines={f"L={L}": L} | {f"L'={t}": t for t in targets})
            sections += ["## Perplexity by context length", "",
                         "Held-out test documents; the same target tokens scored at every length "
                         "(sliding window, see `ropeext eval ppl --help`).", "",
                         markdown_table(df[["method", "layout"] + lengths]), "", "![perplexity](ppl.png)", ""]
            for t in targets:
                sections += phenomenon(df[lengths], L, t) + [""]
        for path in args.compare:
            table = pd.read_csv(path)
            name = Path(path).parent.name
            table.to_csv(out / f"disturbance-{name}.csv", index=False)
            sections += [f"## RoPE disturbance ({name})", "", markdown_table(table.set_index(table.columns[0]), ".4f"), ""]
        (out / "summary.md").write_text("\n".join(sections))
        run_.log_outputs(out)
    print(f"report: {out / 'summary.md'}")
