# The tokenizer (trained on the train split, or the base model's own) and the tokenized splits. With
# corpus.shards > 1 the work is scattered: the tokenizer is trained once, every corpus shard is tokenized
# by a job of its own (a cluster spreads them over nodes), and the shards are gathered into one file per split.

TOKENIZER_INPUTS = [f"{R}/models/{MODEL}-base"] if TOKENIZER_FROM_BASE else []


if SHARDS == 1:

    rule tokenizer:
        input:
            TOKENIZER_INPUTS,
            splits=rules.corpus.output.splits,
        output:
            tokenizer=TOKENIZER,
            tokens=expand(f"{R}/tokens/{{split}}.parquet", split=SPLITS),
            stats=f"{R}/tokens/stats.json",
        params:
            cli=cli("tokenizer"),
            cfg=CONFIG,
            settings=section("tokenizer", "corpus.max_tokens"),
            corpus=lambda w, input: os.path.dirname(input.splits[0]),
            tokdir=lambda w, output: os.path.dirname(output.tokenizer),
            tokens=lambda w, output: os.path.dirname(output.stats),
        threads: threads_of("data")
        priority: DATA_PRIORITY
        resources:
            **resources_of("data"),
        log:
            log_file("tokenizer", "tokenizer"),
        benchmark:
            bench_file("tokenizer", "tokenizer")
        conda:
            ENV
        shell:
            "{params.cli} tokenizer --config {params.cfg:q} --corpus-dir {params.corpus:q} "
            "--tokenizer-dir {params.tokdir:q} --tokens-dir {params.tokens:q} --threads {threads} > {log:q} 2>&1"

else:

    rule tokenizer_train:
        input:
            TOKENIZER_INPUTS,
            splits=corpus_files("train"),
        output:
            tokenizer=TOKENIZER,
        params:
            cli=cli("tokenizer_train"),
            cfg=CONFIG,
            settings=section("tokenizer"),
            corpus=lambda w, input: os.path.dirname(input.splits[0]),
            tokdir=lambda w, output: os.path.dirname(output.tokenizer),
        threads: threads_of("data")
        priority: DATA_PRIORITY
        resources:
            **resources_of("data"),
        log:
            log_file("tokenizer", "train"),
        benchmark:
            bench_file("tokenizer", "train")
        conda:
            ENV
        shell:
            "{params.cli} tokenizer --config {params.cfg:q} --corpus-dir {params.corpus:q} "
            "--tokenizer-dir {params.tokdir:q} --train-only > {log:q} 2>&1"

    rule tokenize_shard:
        input:
            corpus=f"{R}/corpus/{{split}}-{{shard}}-of-{SHARDS:05d}.parquet",
            tokenizer=TOKENIZER,
        output:
            tokens=temp(f"{R}/tokens/{{split}}-{{shard}}-of-{SHARDS:05d}.parquet"),
            stats=temp(f"{R}/tokens/{{split}}-{{shard}}-of-{SHARDS:05d}.stats.json"),
        params:
            cli=cli("tokenize_shard"),
            cfg=CONFIG,
            settings=section("tokenizer", "corpus.max_tokens"),
            corpus=lambda w, input: os.path.dirname(input.corpus),
            tokdir=lambda w, input: os.path.dirname(input.tokenizer),
            tokens=lambda w, output: os.path.dirname(output.tokens),
            shard=lambda w: f"{int(w.shard)}/{SHARDS}",
        threads: threads_of("data")
        priority: DATA_PRIORITY
        resources:
            **resources_of("data"),
        log:
            log_file("tokenizer", "{split}-{shard}"),
        benchmark:
            bench_file("tokenizer", "{split}-{shard}")
        conda:
            ENV
        shell:
            "{params.cli} tokenizer --config {params.cfg:q} --corpus-dir {params.corpus:q} --tokenizer-dir {params.tokdir:q} "
            "--tokens-dir {params.tokens:q} --split {wildcards.split} --shard {params.shard:q} --threads {threads} "
            "> {log:q} 2>&1"

    rule tokens_gather:
        input:
            shards=[f for split in SPLITS for f in token_shard_files(split)],
            stats=[f.replace(".parquet", ".stats.json") for split in SPLITS for f in token_shard_files(split)],
            tokenizer=TOKENIZER,
        output:
            tokens=expand(f"{R}/tokens/{{split}}.parquet", split=SPLITS),
            stats=f"{R}/tokens/stats.json",
        params:
            cli=cli("tokens_gather"),
            cfg=CONFIG,
            tokdir=lambda w, input: os.path.dirname(input.tokenizer),
            tokens=lambda w, output: os.path.dirname(output.stats),
        threads: threads_of("data")
        priority: DATA_PRIORITY
        resources:
            **resources_of("data"),
        log:
            log_file("tokenizer", "gather"),
        benchmark:
            bench_file("tokenizer", "gather")
        conda:
            ENV
        shell:
            "{params.cli} tokenizer --config {params.cfg:q} --tokenizer-dir {params.tokdir:q} --tokens-dir {params.tokens:q} "
            "--gather > {log:q} 2>&1"
