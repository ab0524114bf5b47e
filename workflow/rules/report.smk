rule report:
    input:
        ppl=[f"{R}/eval/ppl/{v}/metrics.json" for v in all_variants()],
        compare=expand(f"{R}/rope/compare-{{target}}/table.csv", target=TARGETS),
        angles=expand(f"{R}/rope/angles-{{target}}/heatmap.png", target=TARGETS),
    output:
        summary=f"{R}/report/summary.md",
        ppl_csv=f"{R}/report/ppl.csv",
        ppl_png=f"{R}/report/ppl.png",
    params:
        cfg=CONFIG,
        outdir=lambda w, output: os.path.dirname(output.summary),
    log:
        "logs/report/report.log",
    benchmark:
        "benchmarks/report/report.tsv"
    conda:
        ENV
    shell:
        "ropeext report --config {params.cfg} --ppl {input.ppl} --compare {input.compare} "
        "--output-dir {params.outdir} > {log} 2>&1"
