# ropeext: RoPE context-window extension (DPRoPE scaling, AnchorAttention packing), end to end.
# Run `make demo` for the embedded default, or `snakemake --cores N --configfile config/<x>.yaml`.


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/corpus.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/rope.smk"
include: "workflow/rules/pack.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/eval_ppl.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        f"{R}/report/summary.md",
    default_target: True


onstart:
    mlflow_start()


onsuccess:
    mlflow_end("FINISHED")


onerror:
    mlflow_end("FAILED")
