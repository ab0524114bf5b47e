rule tokenizer:
    input:
        rules.corpus.output.splits,
    output:
        tokenizer=f"{R}/tokenizer/tokenizer.json",
        tokens=expand(f"{R}/tokens/{{split}}.parquet", split=SPLITS),
        stats=f"{R}/tokens/stats.json",
    params:
        job=job_env("tokenizer"),
        cfg=CONFIG,
        settings=section("tokenizer"),
        corpus=lambda w, input: os.path.dirname(input[0]),
        tokdir=lambda w, output: os.path.dirname(output.tokenizer),
        tokens=lambda w, output: os.path.dirname(output.stats),
    log:
        "logs/tokenizer/tokenizer.log",
    benchmark:
        "benchmarks/tokenizer/tokenizer.tsv"
    conda:
        ENV
    shell:
        "{params.job} ropeext tokenizer --config {params.cfg} --corpus-dir {params.corpus} "
        "--tokenizer-dir {params.tokdir} --tokens-dir {params.tokens} > {log} 2>&1"
