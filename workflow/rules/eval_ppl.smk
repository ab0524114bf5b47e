# Perplexity by length for every selected variant (eval.ppl.variants): each method applied to
# the base model without fine-tuning ("noft") and each fine-tuned (method x layout) model.


rule eval_ppl:
    input:
        model=model_dir,
        tokens=f"{R}/tokens/test.parquet",
    output:
        metrics=f"{R}/eval/ppl/{MODEL}-{{method}}-{{target}}-{{layout}}/metrics.json",
        png=report(f"{R}/eval/ppl/{MODEL}-{{method}}-{{target}}-{{layout}}/ppl.png", caption="../report/ppl_variant.rst", category="Perplexity",
                   subcategory="{method}-{target}-{layout}"),
    wildcard_constraints:
        layout=EVAL_LAYOUT,
    params:
        cli=cli("eval_ppl"),
        cfg=CONFIG,
        settings=section("eval.ppl"),
        variant=lambda w: variant(w.method, w.target, w.layout),
        outdir=lambda w, output: os.path.dirname(output.metrics),
    threads: threads_of("eval")
    resources:
        **resources_of("eval"),
    log:
        log_file("eval_ppl", "{method}-{target}-{layout}"),
    benchmark:
        bench_file("eval_ppl", "{method}-{target}-{layout}")
    conda:
        ENV
    shell:
        "{params.cli} eval ppl --config {params.cfg} --model {input.model} --tokens {input.tokens} "
        "--output-dir {params.outdir} --threads {threads} --variant {params.variant} > {log} 2>&1"
