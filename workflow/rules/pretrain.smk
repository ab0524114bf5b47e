rule pretrain:
    input:
        train=f"{R}/packed/full-w{L}/train.parquet",
        tokenizer=rules.tokenizer.output.tokenizer,
    output:
        directory(f"{R}/models/{MODEL}-base"),
    params:
        job=job_env("pretrain"),
        cfg=CONFIG,
        settings=section("model", "pretrain", "seed"),
        tokdir=lambda w, input: os.path.dirname(input.tokenizer),
        variant=f"{MODEL}-base",
    threads: 2
    log:
        f"logs/pretrain/{MODEL}-base.log",
    benchmark:
        f"benchmarks/pretrain/{MODEL}-base.tsv"
    conda:
        ENV
    shell:
        "{params.job} ropeext pretrain --config {params.cfg} --tokenizer {params.tokdir} --train {input.train} "
        "--output {output} --threads {threads} --variant {params.variant} > {log} 2>&1"
