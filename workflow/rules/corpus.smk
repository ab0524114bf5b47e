rule corpus:
    output:
        splits=[f for split in SPLITS for f in corpus_files(split)],
        manifest=f"{R}/corpus/manifest.json",
    params:
        cli=cli("corpus"),
        cfg=CONFIG,
        settings=section("corpus", "seed"),
        outdir=lambda w, output: os.path.dirname(output.manifest),
    threads: threads_of("data")
    priority: DATA_PRIORITY
    resources:
        **resources_of("data"),
    log:
        log_file("corpus", "corpus"),
    benchmark:
        bench_file("corpus", "corpus")
    conda:
        ENV
    shell:
        "{params.cli} corpus --config {params.cfg:q} --output-dir {params.outdir:q} > {log:q} 2>&1"
