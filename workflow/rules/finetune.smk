rule finetune:
    input:
        base_model_input,
        scaling=f"{R}/rope/scaling/{{method}}-{{target}}.json",
        train=f"{R}/packed/{{layout}}-w{{target}}/train.parquet",
    output:
        directory(f"{R}/models/{MODEL}-{{method}}-{{target}}-{{layout}}"),
    params:
        job=job_env("finetune"),
        cfg=CONFIG,
        settings=section("finetune", "attention", "seed"),
        base=base_model(),
        variant=lambda w: variant(w.method, w.target, w.layout),
        launcher=launcher,
    threads: 1
    log:
        "logs/finetune/{method}-{target}-{layout}.log",
    benchmark:
        "benchmarks/finetune/{method}-{target}-{layout}.tsv"
    conda:
        ENV
    shell:
        "{params.job} {params.launcher} finetune --config {params.cfg} --base {params.base} --scaling {input.scaling} "
        "--train {input.train} --layout {wildcards.layout} --output {output} --threads {threads} "
        "--variant {params.variant} > {log} 2>&1"
