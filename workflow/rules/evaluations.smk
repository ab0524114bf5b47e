# One rule per evaluation suite of ropeext.suites (docs/adding-an-evaluation.md): it evaluates one
# selected variant (the suite's config section `variants`): each method applied to the base model
# without fine-tuning ("noft") and each fine-tuned (method x layout) model.


for _suite in SUITES:

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
        resources:
            **resources_of("eval"),
        log:
            log_file(_suite.rule, "{method}-{target}-{layout}"),
        benchmark:
            bench_file(_suite.rule, "{method}-{target}-{layout}")
        conda:
            ENV
        shell:
            "{params.cli} {params.command} > {log} 2>&1"
