def heldout_tokens():
    """The held-out split whose first documents give the fine-tune's validation windows (finetune.val_windows):
    validation, else test when corpus.split_fractions.validation is 0; none without either, or with 0 windows."""
    if not config["finetune"]["val_windows"]:
        return []
    fractions = config["corpus"]["split_fractions"]
    split = next((s for s in ("validation", "test") if fractions[s] > 0), None)
    return [f"{R}/tokens/{split}.parquet"] if split else []


rule finetune:
    input:
        base=base_model(),
        scaling=f"{R}/rope/scaling/{{method}}-{{target}}.json",
        train=f"{R}/packed/{{layout}}-w{{target}}/train.parquet",
        val=heldout_tokens(),
    output:
        directory(f"{R}/models/{MODEL}-{{method}}-{{target}}-{{layout}}"),
    params:
        cli=cli("finetune"),
        cfg=CONFIG,
        settings=section("finetune", "attention", "seed", "packing.mask_boundary_labels"),
        variant=lambda w: variant(w.method, w.target, w.layout),
        val=" ".join(f"--val {shlex.quote(path)}" for path in heldout_tokens()),
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
