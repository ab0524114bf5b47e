rule eval_ruler:
    input:
        unpack(ruler_inputs),
        model=model_dir,
    output:
        metrics=f"{R}/eval/ruler/{MODEL}-{{method}}-{{target}}-{{layout}}/metrics.json",
        png=report(f"{R}/eval/ruler/{MODEL}-{{method}}-{{target}}-{{layout}}/heatmap.png", caption="../report/ruler.rst", category="RULER",
                   subcategory="{method}-{target}-{layout}"),
    wildcard_constraints:
        layout=EVAL_LAYOUT,
    params:
        cli=cli("eval_ruler"),
        cfg=CONFIG,
        settings=section("eval.ruler", "seed"),
        essay=ruler_essay_args,
        variant=lambda w: variant(w.method, w.target, w.layout),
        outdir=lambda w, output: os.path.dirname(output.metrics),
    threads: threads_of("eval")
    resources:
        **resources_of("eval"),
    log:
        log_file("eval_ruler", "{method}-{target}-{layout}"),
    benchmark:
        bench_file("eval_ruler", "{method}-{target}-{layout}")
    conda:
        ENV
    shell:
        "{params.cli} eval ruler --config {params.cfg} --model {input.model} "
        "{params.essay} --output-dir {params.outdir} "
        "--no-progress --variant {params.variant} > {log} 2>&1"
