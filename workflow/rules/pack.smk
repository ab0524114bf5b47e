rule pack:
    input:
        tokens=f"{R}/tokens/{{split}}.parquet",
        tokenizer=TOKENIZER,
    output:
        data=f"{R}/packed/{{layout}}-w{{window}}/{{split}}.parquet",
        stats=f"{R}/packed/{{layout}}-w{{window}}/{{split}}.stats.json",
    params:
        cli=cli("pack"),
        cfg=CONFIG,
        settings=section("packing", "seed"),
        seed=config["seed"],
        tokdir=lambda w, input: os.path.dirname(input.tokenizer),
        flags=lambda w: " ".join(
            (["--pad-last"] if not config["packing"]["drop_last"] else [])
            + (["--no-mask-boundary-labels"] if not config["packing"]["mask_boundary_labels"] else [])
        ),
    threads: threads_of("data")
    priority: DATA_PRIORITY
    resources:
        **resources_of("data"),
    log:
        log_file("pack", "{layout}-w{window}-{split}"),
    benchmark:
        bench_file("pack", "{layout}-w{window}-{split}")
    conda:
        ENV
    shell:
        "{params.cli} pack --config {params.cfg:q} --tokens {input.tokens:q} --tokenizer {params.tokdir:q} --window {wildcards.window} "
        "--layout {wildcards.layout} --seed {params.seed:q} {params.flags} --output {output.data:q} "
        "--stats {output.stats:q} --variant {wildcards.layout}-w{wildcards.window}-{wildcards.split} > {log:q} 2>&1"
