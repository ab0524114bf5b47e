rule eval_openllm:
    input:
        model=model_dir,
        heldout=f"{R}/tokens/test.parquet",
    output:
        metrics=f"{R}/eval/openllm/{MODEL}-{{method}}-{{target}}-{{layout}}/metrics.json",
    wildcard_constraints:
        layout=EVAL_LAYOUT,
    params:
        cli=cli("eval_openllm"),
        cfg=CONFIG,
        settings=section("eval.openllm", "seed"),
        variant=lambda w: variant(w.method, w.target, w.layout),
        outdir=lambda w, output: os.path.dirname(output.metrics),
    threads: threads_of("eval")
    resources:
        **resources_of("eval"),
    log:
        log_file("eval_openllm", "{method}-{target}-{layout}"),
    benchmark:
        bench_file("eval_openllm", "{method}-{target}-{layout}")
    conda:
        ENV
    shell:
        "{params.cli} eval openllm --config {params.cfg} --model {input.model} "
        "--heldout {input.heldout} --output-dir {params.outdir} --no-progress --variant {params.variant} > {log} 2>&1"
