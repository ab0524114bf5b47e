rule finetune:
    input:
        base=base_model(),
        scaling=f"{R}/rope/scaling/{{method}}-{{target}}.json",
        train=f"{R}/packed/{{layout}}-w{{target}}/train.parquet",
    output:
        directory(f"{R}/models/{MODEL}-{{method}}-{{target}}-{{layout}}"),
    params:
        cli=cli("finetune"),
        cfg=CONFIG,
        settings=section("finetune", "attention", "seed"),
        variant=lambda w: variant(w.method, w.target, w.layout),
    threads: threads_of("finetune")
    priority: FINETUNE_PRIORITY
    resources:
        **resources_of("finetune"),
    log:
        log_file("finetune", "{method}-{target}-{layout}"),
    benchmark:
        bench_file("finetune", "{method}-{target}-{layout}")
    conda:
        ENV
    shell:
        "{params.cli} finetune --config {params.cfg:q} --base {input.base:q} --scaling {input.scaling:q} "
        "--train {input.train:q} --layout {wildcards.layout} --output {output:q} --threads {threads} "
        "--variant {params.variant:q} > {log:q} 2>&1"
