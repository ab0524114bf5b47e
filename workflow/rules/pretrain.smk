rule pretrain:
    input:
        train=f"{R}/packed/full-w{L}/train.parquet",
        tokenizer=TOKENIZER,
    output:
        directory(f"{R}/models/{MODEL}-base"),
    params:
        cli=cli("pretrain"),
        cfg=CONFIG,
        settings=section("model", "pretrain", "seed"),
        tokdir=lambda w, input: os.path.dirname(input.tokenizer),
        variant=f"{MODEL}-base",
    threads: threads_of("pretrain")
    resources:
        **resources_of("pretrain"),
    log:
        log_file("pretrain", f"{MODEL}-base"),
    benchmark:
        bench_file("pretrain", f"{MODEL}-base")
    conda:
        ENV
    shell:
        "{params.cli} pretrain --config {params.cfg:q} --tokenizer {params.tokdir:q} --train {input.train:q} "
        "--output {output:q} --threads {threads} --variant {params.variant:q} > {log:q} 2>&1"
