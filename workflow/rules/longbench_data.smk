# The embedded LongBench-E-style code-completion task built from the held-out split, which the longbench
# suite (ropeext/suites/longbench.py) reads unless the user names their LongBench copy (eval.longbench.data_dir).


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
        "{params.cli} eval longbench --build-embedded --config {params.cfg:q} --tokens {input.tokens:q} "
        "--tokenizer {params.tokdir:q} --windows {params.windows:q} --output-dir {params.outdir:q} "
        "--variant embedded > {log:q} 2>&1"

