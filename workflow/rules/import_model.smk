# A pretrained base model (model.path: a GGUF file, an installed package shipping one, a Hugging Face
# directory or a hub id), imported once as a standard Hugging Face directory. Without model.path the
# tiny model is pre-trained instead (pretrain.smk).


rule import_model:
    output:
        directory(f"{R}/models/{MODEL}-base"),
    params:
        cli=cli("import_model"),
        cfg=CONFIG,
        settings=section("model.path", "model.import"),
        variant=f"{MODEL}-base",
    threads: threads_of("data")
    resources:
        **resources_of("data"),
    log:
        log_file("import_model", f"{MODEL}-base"),
    benchmark:
        bench_file("import_model", f"{MODEL}-base")
    conda:
        ENV
    shell:
        "{params.cli} import-model --config {params.cfg:q} --output {output:q} --variant {params.variant:q} > {log:q} 2>&1"
