rule eval_ruler:
    input:
        model=model_dir,
        essay=ruler_essay_source,
        tokenizer=rules.tokenizer.output.tokenizer,
    output:
        metrics=f"{R}/eval/ruler/{MODEL}-{{method}}-{{target}}-{{layout}}/metrics.json",
        png=report(f"{R}/eval/ruler/{MODEL}-{{method}}-{{target}}-{{layout}}/heatmap.png", caption="../report/ruler.rst", category="RULER",
                   subcategory="{method}-{target}-{layout}"),
    wildcard_constraints:
        layout="noft|full|intra_doc_reset|intra_doc|anchor_tag|anchor",
    params:
        job=job_env("eval_ruler"),
        cfg=CONFIG,
        settings=section("eval", "seed"),
        tokdir=lambda w, input: os.path.dirname(input.tokenizer),
        variant=lambda w: variant(w.method, w.target, w.layout),
        outdir=lambda w, output: os.path.dirname(output.metrics),
    threads: 1
    log:
        "logs/eval_ruler/{method}-{target}-{layout}.log",
    benchmark:
        "benchmarks/eval_ruler/{method}-{target}-{layout}.tsv"
    conda:
        ENV
    shell:
        "{params.job} OMP_NUM_THREADS={threads} ropeext eval ruler --config {params.cfg} --model {input.model} "
        "--essay-source {input.essay} --essay-tokenizer {params.tokdir} --output-dir {params.outdir} "
        "--no-progress --variant {params.variant} > {log} 2>&1"
