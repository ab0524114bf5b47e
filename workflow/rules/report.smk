# The report reads the evaluations' metrics and, from the model directories, the base model's
# import_manifest.json (or, pre-trained here, its training_summary.json) and each fine-tuned variant's
# training_summary.json: it names the base model by its source and states how each variant was trained.


# the fine-tuned variants some evaluation reads
REPORT_FINETUNED = list(
    dict.fromkeys(
        f"{R}/models/{variant(*m)}"
        for suite in [s.config(config) for s in SUITES]
        if suite.get("enabled", True)
        for m in selected_models(config, suite["variants"])
        if m[2] != "noft"
    )
)
# --<name> {input.<name>:q} for each suite of ropeext.suites
SUITE_ARGS = "".join(f"--{suite.name} {{input.{suite.name}:q}} " for suite in SUITES)
BASE_INFO = "import_manifest.json" if config["model"]["path"] else "training_summary.json"


rule report:
    input:
        **{suite.name: suite_outputs(suite) for suite in SUITES},
        compare=expand(f"{R}/rope/compare-{{target}}/table.csv", target=TARGETS),
        angles=expand(f"{R}/rope/angles-{{target}}/heatmap.png", target=TARGETS),
        references=REFERENCES,
        base=base_model(),
        finetuned=REPORT_FINETUNED,
    output:
        summary=f"{R}/report/summary.md",
        **report_items(REPORT_FINETUNED),
    params:
        cli=cli("report"),
        cfg=CONFIG,
        settings=section("experiment", "model", "extension", "report", "corpus", "rope", "eval"),
        outdir=lambda w, output: os.path.dirname(output.summary),
        base_info=lambda w, input: os.path.join(input.base, BASE_INFO),
        training=lambda w, input: [os.path.join(d, "training_summary.json") for d in input.finetuned],
    threads: threads_of("light")
    resources:
        **resources_of("light"),
    log:
        log_file("report", "report"),
    benchmark:
        bench_file("report", "report")
    conda:
        ENV
    shell:
        f"{{params.cli}} report --config {{params.cfg:q}} {SUITE_ARGS}"
        "--compare {input.compare:q} --angles {input.angles:q} --references {input.references:q} "
        "--base-model {params.base_info:q} --training {params.training:q} --output-dir {params.outdir:q} > {log:q} 2>&1"
