# RoPE geometry: angle histograms, the per-method scaling solve, and the method comparison.


rule angles:
    output:
        npz=f"{R}/rope/angles-{{target}}/histograms.npz",
        png=report(f"{R}/rope/angles-{{target}}/heatmap.png", caption="../report/angles.rst", category="RoPE"),
    params:
        job=job_env("angles"),
        geometry=geometry_args,
        methods=",".join(config["rope"]["angles_methods"]),
        variant=lambda w: f"{MODEL}-{w.target}",
    log:
        "logs/angles/{target}.log",
    benchmark:
        "benchmarks/angles/{target}.tsv"
    conda:
        ENV
    shell:
        "{params.job} ropeext angles {params.geometry} --methods {params.methods} --output {output.npz} --plot {output.png} "
        "--variant {params.variant} > {log} 2>&1"


rule solve:
    output:
        f"{R}/rope/scaling/{{method}}-{{target}}.json",
    params:
        job=job_env("solve"),
        geometry=geometry_args,
        extra=solve_args,
        variant=lambda w: f"{MODEL}-{w.method}-{w.target}",
    log:
        "logs/solve/{method}-{target}.log",
    benchmark:
        "benchmarks/solve/{method}-{target}.tsv"
    conda:
        ENV
    shell:
        "{params.job} ropeext solve {params.geometry} --method {wildcards.method} {params.extra} "
        "--output {output} --variant {params.variant} > {log} 2>&1"


rule compare:
    output:
        table=f"{R}/rope/compare-{{target}}/table.csv",
        per_pair=report(f"{R}/rope/compare-{{target}}/per_pair_disturbance.png", caption="../report/disturbance.rst",
                        category="RoPE"),
        histograms=report(f"{R}/rope/compare-{{target}}/angle_histograms.png", caption="../report/histograms.rst",
                          category="RoPE"),
    params:
        job=job_env("compare"),
        geometry=geometry_args,
        methods=",".join(config["rope"]["compare_methods"]),
        variant=lambda w: f"{MODEL}-{w.target}",
    log:
        "logs/compare/{target}.log",
    benchmark:
        "benchmarks/compare/{target}.tsv"
    conda:
        ENV
    shell:
        "{params.job} ropeext compare {params.geometry} --methods {params.methods} --output {output.table} "
        "--variant {params.variant} > {log} 2>&1"
