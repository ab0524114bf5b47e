"""Published tables beside the pipeline's own numbers, with what makes them comparable.

``load`` reads and validates ``config/reference_values.yaml`` (one entry per published table: its
columns, its rows with the setting each row was measured in, and the protocol a run must share with
it). ``match`` pairs each of our variants with the rows whose setting it reproduces (model, method,
target length, layout, training data, RoPE base, ...) and says where a run departs from the paper's
protocol (the benchmark's own data, its prompt templates, its task set, its few-shot counts).
``render`` writes the report's lines: a pair side by side only where comparable, otherwise why not;
rows no variant reproduces as not run in this config.
"""

from ropeext.report.references.load import (
    BENCHMARK_NAMES,
    REPOSITORY_REFERENCES,
    References,
    Row,
    Table,
    load_references,
    parse_references,
)
from ropeext.report.references.match import (
    Comparison,
    compare_table,
    data_reasons,
    longbench_categories,
    our_values,
    protocol_reasons,
    row_matches,
    run_setting,
)
from ropeext.report.references.render import (
    Beside,
    beside_ours,
    comparison_lines,
    describe_run,
    disturbance_beside,
    protocol_text,
    summary_lines,
)

__all__ = [
    "BENCHMARK_NAMES",
    "REPOSITORY_REFERENCES",
    "Beside",
    "Comparison",
    "References",
    "Row",
    "Table",
    "beside_ours",
    "compare_table",
    "comparison_lines",
    "data_reasons",
    "describe_run",
    "disturbance_beside",
    "load_references",
    "longbench_categories",
    "our_values",
    "parse_references",
    "protocol_reasons",
    "protocol_text",
    "row_matches",
    "run_setting",
    "summary_lines",
]
