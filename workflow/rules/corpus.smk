rule corpus:
    output:
        splits=expand(f"{R}/corpus/{{split}}.parquet", split=SPLITS),
        manifest=f"{R}/corpus/manifest.json",
    params:
        job=job_env("corpus"),
        cfg=CONFIG,
        settings=section("corpus", "seed"),
        outdir=lambda w, output: os.path.dirname(output.manifest),
    log:
        "logs/corpus/corpus.log",
    benchmark:
        "benchmarks/corpus/corpus.tsv"
    conda:
        ENV
    shell:
        "{params.job} ropeext corpus --config {params.cfg} --output-dir {params.outdir} > {log} 2>&1"
