# RoPE geometry: angle histograms, the per-method scaling solve, and the method comparison.


rule angles:
    output:
        npz=f"{R}/rope/angles-{{target}}/histograms.npz",
        png=report(f"{R}/rope/angles-{{target}}/heatmap.png", caption="../report/angles.rst", category="RoPE"),
    params:
        cli=cli("angles"),
        cfg=CONFIG,
        geometry=geometry_args,
        extra=solve_args,
        methods=",".join(config["rope"]["angles_methods"]),
        variant=lambda w: f"{MODEL}-{w.target}",
    threads: threads_of("light")
    resources:
        **resources_of("light"),
    log:
        log_file("angles", "{target}"),
    benchmark:
        bench_file("angles", "{target}")
    conda:
        ENV
    shell:
        "{params.cli} angles --config {params.cfg} {params.geometry} {params.extra} --methods {params.methods} --output {output.npz} --plot {output.png} "
        "--variant {params.variant} > {log} 2>&1"


rule solve:
    output:
        f"{R}/rope/scaling/{{method}}-{{target}}.json",
    params:
        cli=cli("solve"),
        geometry=geometry_args,
        extra=solve_args,
        variant=lambda w: f"{MODEL}-{w.method}-{w.target}",
    threads: threads_of("light")
    resources:
        **resources_of("light"),
    log:
        log_file("solve", "{method}-{target}"),
    benchmark:
        bench_file("solve", "{method}-{target}")
    conda:
        ENV
    shell:
        "{params.cli} solve {params.geometry} --method {wildcards.method} {params.extra} "
        "--output {output} --variant {params.variant} > {log} 2>&1"


rule compare:
    output:
        table=f"{R}/rope/compare-{{target}}/table.csv",
        solutions=f"{R}/rope/compare-{{target}}/compare.json",
        per_pair=report(f"{R}/rope/compare-{{target}}/per_pair_disturbance.png", caption="../report/disturbance.rst",
                        category="RoPE"),
        histograms=report(f"{R}/rope/compare-{{target}}/angle_histograms.png", caption="../report/histograms.rst",
                          category="RoPE"),
    params:
        cli=cli("compare"),
        cfg=CONFIG,
        geometry=geometry_args,
        extra=solve_args,
        methods=",".join(config["rope"]["compare_methods"]),
        variant=lambda w: f"{MODEL}-{w.target}",
    threads: threads_of("light")
    resources:
        **resources_of("light"),
    log:
        log_file("compare", "{target}"),
    benchmark:
        bench_file("compare", "{target}")
    conda:
        ENV
    shell:
        "{params.cli} compare --config {params.cfg} {params.geometry} {params.extra} --methods {params.methods} --output {output.table} "
        "--variant {params.variant} > {log} 2>&1"
