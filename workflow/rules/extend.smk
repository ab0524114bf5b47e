# Each method applied to the base model without training: the "noft" variants, saved as
# standard model directories so every evaluation reads them like any other model.


rule extend:
    input:
        base_model_input,
        scaling=f"{R}/rope/scaling/{{method}}-{{target}}.json",
    output:
        directory(f"{R}/models/{MODEL}-{{method}}-{{target}}-noft"),
    params:
        job=job_env("extend"),
        base=base_model(),
        variant=lambda w: variant(w.method, w.target, "noft"),
    log:
        "logs/extend/{method}-{target}.log",
    benchmark:
        "benchmarks/extend/{method}-{target}.tsv"
    conda:
        ENV
    shell:
        "{params.job} ropeext extend --base {params.base} --scaling {input.scaling} --output {output} "
        "--variant {params.variant} > {log} 2>&1"
