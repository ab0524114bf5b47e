rule tokenizer:
    input:
        splits=rules.corpus.output.splits,
        base=[f"{R}/models/{MODEL}-base"] if TOKENIZER_FROM_BASE else [],
    output:
        tokenizer=f"{R}/tokenizer/tokenizer.json",
        tokens=expand(f"{R}/tokens/{{split}}.parquet", split=SPLITS),
        stats=f"{R}/tokens/stats.json",
    params:
        cli=cli("tokenizer"),
        cfg=CONFIG,
        settings=section("tokenizer"),
        corpus=lambda w, input: os.path.dirname(input.splits[0]),
        tokdir=lambda w, output: os.path.dirname(output.tokenizer),
        tokens=lambda w, output: os.path.dirname(output.stats),
    threads: threads_of("data")
    resources:
        **resources_of("data"),
    log:
        log_file("tokenizer", "tokenizer"),
    benchmark:
        bench_file("tokenizer", "tokenizer")
    conda:
        ENV
    shell:
        "{params.cli} tokenizer --config {params.cfg} --corpus-dir {params.corpus} "
        "--tokenizer-dir {params.tokdir} --tokens-dir {params.tokens} > {log} 2>&1"
