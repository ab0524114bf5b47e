# One rule per evaluation suite of ropeext.suites (docs/adding-an-evaluation.md). With eval.jobs
# per_variant (the default) a job evaluates one selected variant (the suite's config section `variants`):
# each method applied to the base model without fine-tuning ("noft") and each fine-tuned (method x layout)
# model.


for _suite in SUITES if config["eval"]["jobs"] == "per_variant" else []:

    rule:
        name:
            _suite.rule
        input:
            unpack(lambda w, s=_suite: {"model": model_dir(w), **s.inputs(config)}),
        output:
            **suite_rule_outputs(_suite),
        wildcard_constraints:
            layout=EVAL_LAYOUT,
        params:
            cli=cli(_suite.rule),
            settings=section(_suite.section, *_suite.settings),
            command=suite_command(_suite),
        threads: threads_of("eval")
        priority: _suite.priority
        resources:
            **resources_of("eval"),
        log:
            log_file(_suite.rule, "{method}-{target}-{layout}"),
        benchmark:
            bench_file(_suite.rule, "{method}-{target}-{layout}")
        conda:
            ENV
        shell:
            "{params.cli} {params.command} > {log:q} 2>&1"


# eval.jobs per_suite: one job per suite evaluates every selected variant in one process (`ropeext each`),
# one start-up instead of one per variant.
for _suite in SUITES if config["eval"]["jobs"] == "per_suite" else []:

    rule:
        name:
            _suite.rule
        input:
            models=[f"{R}/models/{name}" for name in suite_variants(_suite)],
            **_suite.inputs(config),
        output:
            suite_jobs_outputs(_suite),
        params:
            cli=cli(_suite.rule),
            settings=section(_suite.section, *_suite.settings),
            commands=suite_jobs_command(_suite),
        threads: threads_of("eval")
        priority: _suite.priority
        resources:
            **resources_of("eval"),
        log:
            log_file(_suite.rule, "all"),
        benchmark:
            bench_file(_suite.rule, "all")
        conda:
            ENV
        shell:
            "{params.cli} each {params.commands} > {log:q} 2>&1"
