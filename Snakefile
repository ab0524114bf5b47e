# ropeext: RoPE context-window extension (DPRoPE scaling, AnchorAttention packing), end to end.
# Run `make demo` for the embedded default, or `snakemake --cores N --configfile config/<x>.yaml`.


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


from ropeext.workflow import end_invocation, start_invocation  # noqa: E402

include: "workflow/rules/corpus.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/rope.smk"
include: "workflow/rules/pack.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/extend.smk"
include: "workflow/rules/eval_ppl.smk"
include: "workflow/rules/eval_passkey.smk"
include: "workflow/rules/eval_longbench.smk"
include: "workflow/rules/eval_openllm.smk"
include: "workflow/rules/eval_ruler.smk"
include: "workflow/rules/analyze_bf16.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        f"{R}/report/summary.md",
    default_target: True


onstart:
    start_invocation(config)


onsuccess:
    end_invocation("FINISHED")


onerror:
    end_invocation("FAILED")
