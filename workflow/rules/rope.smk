# RoPE geometry, one job per target length: angle histograms, every method's scaling solve, the comparison.


rule rope:
    output:
        npz=f"{R}/rope/angles-{{target}}/histograms.npz",
        heatmap=report(f"{R}/rope/angles-{{target}}/heatmap.png", caption="../report/angles.rst", category="RoPE"),
        scaling=expand(f"{R}/rope/scaling/{{method}}-{{target}}.json", method=ROPE_SCALING, allow_missing=True),
        table=f"{R}/rope/compare-{{target}}/table.csv",
        solutions=f"{R}/rope/compare-{{target}}/compare.json",
        per_pair=report(f"{R}/rope/compare-{{target}}/per_pair_disturbance.png", caption="../report/disturbance.rst",
                        category="RoPE"),
        histograms=report(f"{R}/rope/compare-{{target}}/angle_histograms.png", caption="../report/histograms.rst",
                          category="RoPE"),
    params:
        cli=cli("rope"),
        cfg=CONFIG,
        settings=section("model.architecture", "model.train_length", "extension.methods", "rope"),
        folder=lambda w, output: os.path.dirname(os.path.dirname(output.table)),  # results/rope
        variant=lambda w: f"{MODEL}-{w.target}",
    threads: threads_of("light")
    resources:
        **resources_of("light"),
    log:
        log_file("rope", "{target}"),
    benchmark:
        bench_file("rope", "{target}")
    conda:
        ENV
    shell:
        "{params.cli} rope --config {params.cfg:q} --target-length {wildcards.target} --output-dir {params.folder:q} "
        "--variant {params.variant:q} > {log:q} 2>&1"
