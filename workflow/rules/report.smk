rule report:
    input:
        ppl=suite_outputs("ppl"),
        passkey=suite_outputs("passkey"),
        longbench=suite_outputs("longbench"),
        openllm=suite_outputs("openllm"),
        ruler=suite_outputs("ruler"),
        bf16=suite_outputs("bf16", "bf16_deviation.json"),
        compare=expand(f"{R}/rope/compare-{{target}}/table.csv", target=TARGETS),
        angles=expand(f"{R}/rope/angles-{{target}}/heatmap.png", target=TARGETS),
        references=REFERENCES,
    output:
        summary=f"{R}/report/summary.md",
        ppl_csv=f"{R}/report/ppl.csv",
        ppl_png=report(f"{R}/report/ppl.png", caption="../report/ppl.rst", category="Perplexity"),
    params:
        cli=cli("report"),
        cfg=CONFIG,
        settings=section("experiment", "model", "extension", "report", "corpus", "rope", "eval"),
        outdir=lambda w, output: os.path.dirname(output.summary),
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
        "{params.cli} report --config {params.cfg} --ppl {input.ppl} --passkey {input.passkey} "
        "--longbench {input.longbench} --openllm {input.openllm} --ruler {input.ruler} --bf16 {input.bf16} "
        "--compare {input.compare} --angles {input.angles} --references {input.references} --output-dir {params.outdir} > {log} 2>&1"
