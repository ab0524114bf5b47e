# The held-out split whose first documents give the fine-tune's validation windows (finetune.val_windows):
# validation, else test when corpus.split_fractions.validation is 0; none without either, or with 0 windows.
HELDOUT_TOKENS = [
    f"{R}/tokens/{split}.parquet"
    for split in ("validation", "test")
    if config["finetune"]["val_windows"] and config["corpus"]["split_fractions"][split] > 0
][:1]


rule finetune:
    input:
        base=base_model(),
        scaling=f"{R}/rope/scaling/{{method}}-{{target}}.json",
        train=f"{R}/packed/{{layout}}-w{{target}}/train.parquet",
        val=HELDOUT_TOKENS,
    output:
        directory(f"{R}/models/{MODEL}-{{method}}-{{target}}-{{layout}}"),
    params:
        cli=cli("finetune"),
        cfg=CONFIG,
        settings=section("finetune", "attention", "seed", "packing.mask_boundary_labels"),
        variant=lambda w: variant(w.method, w.target, w.layout),
        val=" ".join(f"--val {shlex.quote(path)}" for path in HELDOUT_TOKENS),
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
        "--train {input.train:q} {params.val} --layout {wildcards.layout} --output {output:q} --threads {threads} "
        "--variant {params.variant:q} > {log:q} 2>&1"
