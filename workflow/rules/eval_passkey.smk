rule eval_passkey:
    input:
        model=model_dir,
    output:
        metrics=f"{R}/eval/passkey/{MODEL}-{{method}}-{{target}}-{{layout}}/metrics.json",
        png=report(f"{R}/eval/passkey/{MODEL}-{{method}}-{{target}}-{{layout}}/heatmap.png", caption="../report/passkey.rst", category="Passkey",
                   subcategory="{method}-{target}-{layout}"),
    wildcard_constraints:
        layout="noft|full|intra_doc_reset|intra_doc|anchor_tag|anchor",
    params:
        job=job_env("eval_passkey"),
        cfg=CONFIG,
        settings=section("eval"),
        variant=lambda w: variant(w.method, w.target, w.layout),
        outdir=lambda w, output: os.path.dirname(output.metrics),
    threads: 1
    log:
        "logs/eval_passkey/{method}-{target}-{layout}.log",
    benchmark:
        "benchmarks/eval_passkey/{method}-{target}-{layout}.tsv"
    conda:
        ENV
    shell:
        "{params.job} OMP_NUM_THREADS={threads} ropeext eval passkey --config {params.cfg} --model {input.model} "
        "--output-dir {params.outdir} --no-progress --variant {params.variant} > {log} 2>&1"
