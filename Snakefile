# ropeext: RoPE context-window extension (DPRoPE scaling, AnchorAttention packing), end to end.
# Run `make demo` for the embedded default, or `.venv/bin/snakemake --cores N --configfile config/<x>.yaml`
# from the repository root (Snakemake finds this file and the profile profiles/default beside it).
#
# The embedded default is read only when no --configfile is given: Snakemake layers --configfile over a
# `configfile:` directive, so a paper config would otherwise inherit the demo's value for every key it
# leaves out.


if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config", "config.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


from ropeext.workflow import end_invocation, print_warnings, start_invocation  # noqa: E402

include: "workflow/rules/corpus.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/rope.smk"
include: "workflow/rules/pack.smk"
if config["model"]["path"]:

    include: "workflow/rules/import_model.smk"

else:

    include: "workflow/rules/pretrain.smk"

include: "workflow/rules/finetune.smk"
include: "workflow/rules/extend.smk"
include: "workflow/rules/longbench_data.smk"
include: "workflow/rules/evaluations.smk"
include: "workflow/rules/report.smk"


# Jobs of seconds run on the submitting host under a cluster executor.
localrules:
    all,
    rope,
    extend,
    longbench_embedded,
    report,


rule all:
    input:
        f"{R}/report/summary.md",
    default_target: True


onstart:
    start_invocation(config)


onsuccess:
    print_warnings()
    end_invocation("FINISHED")


onerror:
    print_warnings()
    end_invocation("FAILED")
