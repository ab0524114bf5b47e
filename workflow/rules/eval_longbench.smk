# LongBench / LongBench-E on the user's data (eval.longbench.data_dir), or the embedded
# LongBench-E-style code-completion task built from the held-out split.


rule longbench_embedded:
    input:
        tokens=f"{R}/tokens/test.parquet",
        tokenizer=TOKENIZER,
    output:
        data=f"{R}/eval/longbench-data/{config['eval']['longbench']['embedded']['task']}_e.jsonl",
        buckets=f"{R}/eval/longbench-data/buckets.json",
    params:
        cli=cli("longbench_embedded"),
        cfg=CONFIG,
        settings=section("eval.longbench.embedded", "seed"),
        tokdir=lambda w, input: os.path.dirname(input.tokenizer),
        outdir=lambda w, output: os.path.dirname(output.buckets),
        windows=",".join(map(str, embedded_windows(config["eval"]["longbench"], L, TARGETS))),
    threads: threads_of("light")
    resources:
        **resources_of("light"),
    log:
        log_file("longbench_embedded", "embedded"),
    benchmark:
        bench_file("longbench_embedded", "embedded")
    conda:
        ENV
    shell:
        "{params.cli} eval longbench --build-embedded --config {params.cfg} --tokens {input.tokens} "
        "--tokenizer {params.tokdir} --windows {params.windows} --output-dir {params.outdir} "
        "--variant embedded > {log} 2>&1"


rule eval_longbench:
    input:
        longbench_data,
        model=model_dir,
    output:
        metrics=f"{R}/eval/longbench/{MODEL}-{{method}}-{{target}}-{{layout}}/metrics.json",
        png=report(f"{R}/eval/longbench/{MODEL}-{{method}}-{{target}}-{{layout}}/longbench.png", caption="../report/longbench.rst", category="LongBench",
                   subcategory="{method}-{target}-{layout}"),
    wildcard_constraints:
        layout=EVAL_LAYOUT,
    params:
        cli=cli("eval_longbench"),
        cfg=CONFIG,
        settings=section("eval.longbench", "seed"),
        data=longbench_data_arg,
        variant=lambda w: variant(w.method, w.target, w.layout),
        outdir=lambda w, output: os.path.dirname(output.metrics),
    threads: threads_of("eval")
    resources:
        **resources_of("eval"),
    log:
        log_file("eval_longbench", "{method}-{target}-{layout}"),
    benchmark:
        bench_file("eval_longbench", "{method}-{target}-{layout}")
    conda:
        ENV
    shell:
        "{params.cli} eval longbench --config {params.cfg} --model {input.model} "
        "{params.data} --output-dir {params.outdir} --no-progress --variant {params.variant} > {log} 2>&1"
