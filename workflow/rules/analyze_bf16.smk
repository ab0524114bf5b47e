rule analyze_bf16:
    input:
        model=model_dir,
        tokens=f"{R}/tokens/test.parquet",
    output:
        result=f"{R}/analysis/bf16/{MODEL}-{{method}}-{{target}}-{{layout}}/bf16_deviation.json",
        png=report(f"{R}/analysis/bf16/{MODEL}-{{method}}-{{target}}-{{layout}}/deviation_vs_delta.png",
                   caption="../report/bf16.rst", category="BF16", subcategory="{method}-{target}-{layout}"),
    wildcard_constraints:
        layout=EVAL_LAYOUT,
    params:
        cli=cli("analyze_bf16"),
        cfg=CONFIG,
        settings=section("analysis.bf16", "seed"),
        variant=lambda w: variant(w.method, w.target, w.layout),
        outdir=lambda w, output: os.path.dirname(output.result),
    threads: threads_of("eval")
    resources:
        **resources_of("eval"),
    log:
        log_file("analyze_bf16", "{method}-{target}-{layout}"),
    benchmark:
        bench_file("analyze_bf16", "{method}-{target}-{layout}")
    conda:
        ENV
    shell:
        "{params.cli} analyze bf16 --config {params.cfg} --model {input.model} --tokens {input.tokens} "
        "--output {params.outdir} --threads {threads} --variant {params.variant} > {log} 2>&1"
