rule eval_passkey:
    input:
        model=model_dir,
    output:
        metrics=f"{R}/eval/passkey/{MODEL}-{{method}}-{{target}}-{{layout}}/metrics.json",
        png=report(f"{R}/eval/passkey/{MODEL}-{{method}}-{{target}}-{{layout}}/heatmap.png", caption="../report/passkey.rst", category="Passkey",
                   subcategory="{method}-{target}-{layout}"),
    wildcard_constraints:
        layout=EVAL_LAYOUT,
    params:
        cli=cli("eval_passkey"),
        cfg=CONFIG,
        settings=section("eval.passkey", "seed"),
        variant=lambda w: variant(w.method, w.target, w.layout),
        outdir=lambda w, output: os.path.dirname(output.metrics),
    threads: threads_of("eval")
    resources:
        **resources_of("eval"),
    log:
        log_file("eval_passkey", "{method}-{target}-{layout}"),
    benchmark:
        bench_file("eval_passkey", "{method}-{target}-{layout}")
    conda:
        ENV
    shell:
        "{params.cli} eval passkey --config {params.cfg} --model {input.model} "
        "--output-dir {params.outdir} --no-progress --variant {params.variant} > {log} 2>&1"
