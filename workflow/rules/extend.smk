# Each method applied to the base model without training: the "noft" variants, saved as
# standard model directories so every evaluation reads them like any other model.


rule extend:
    input:
        base=base_model(),
        scaling=f"{R}/rope/scaling/{{method}}-{{target}}.json",
    output:
        directory(f"{R}/models/{MODEL}-{{method}}-{{target}}-noft"),
    params:
        cli=cli("extend"),
        variant=lambda w: variant(w.method, w.target, "noft"),
    threads: threads_of("light")
    resources:
        **resources_of("light"),
    log:
        log_file("extend", "{method}-{target}"),
    benchmark:
        bench_file("extend", "{method}-{target}")
    conda:
        ENV
    shell:
        "{params.cli} extend --base {input.base} --scaling {input.scaling} --output {output} "
        "--variant {params.variant} > {log} 2>&1"
