rule eval_openllm:
    input:
        model=model_dir,
        heldout=f"{R}/tokens/test.parquet",
    output:
        metrics=f"{R}/eval/openllm/{MODEL}-{{method}}-{{target}}-{{layout}}/metrics.json",
    wildcard_constraints:
        layout="noft|full|intra_doc_reset|intra_doc|anchor_tag|anchor",
    params:
        job=job_env("eval_openllm"),
        cfg=CONFIG,
        settings=section("eval", "seed"),
        variant=lambda w: variant(w.method, w.target, w.layout),
        outdir=lambda w, output: os.path.dirname(output.metrics),
    threads: 1
    log:
        "logs/eval_openllm/{method}-{target}-{layout}.log",
    benchmark:
        "benchmarks/eval_openllm/{method}-{target}-{layout}.tsv"
    conda:
        ENV
    shell:
        "{params.job} OMP_NUM_THREADS={threads} ropeext eval openllm --config {params.cfg} --model {input.model} "
        "--heldout {input.heldout} --output-dir {params.outdir} --no-progress --variant {params.variant} > {log} 2>&1"
