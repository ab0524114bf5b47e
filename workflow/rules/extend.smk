# Every method applied to the base model without training: the "noft" variants, saved as standard
# model directories so every evaluation reads them like any other model. One job per target length
# writes those an evaluation reads (seconds of work each: a config and links to the base's weights).
NOFT_METHODS = noft_methods()


rule extend:
    input:
        base=base_model(),
        scaling=expand(f"{R}/rope/scaling/{{method}}-{{{{target}}}}.json", method=NOFT_METHODS),
    output:
        [directory(f"{R}/models/{MODEL}-{method}-{{target}}-noft") for method in NOFT_METHODS],
    params:
        cli=cli("extend"),
    threads: threads_of("light")
    priority: EXTEND_PRIORITY
    resources:
        **resources_of("light"),
    log:
        log_file("extend", "{target}"),
    benchmark:
        bench_file("extend", "{target}")
    conda:
        ENV
    shell:
        "{params.cli} extend --base {input.base:q} --scaling {input.scaling:q} --output {output:q} > {log:q} 2>&1"
