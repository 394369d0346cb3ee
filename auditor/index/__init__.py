"""The Super Weight Index: read, validate, write and export `index/<org>/<name>.yaml`.

For consumers (this imports neither torch nor transformers):

    from auditor.index import load_index, lookup

    for record in lookup("meta-llama/Llama-2-7b-hf"):      # case-insensitive, one file read
        for w in record.super_weights:
            print(record.source, w.layer, w.row, w.col)    # down_proj.weight[row, col]

    index = load_index("index")                            # every model, validated
    entry = index.get("huggyllama/llama-7b")
    entry.latest()                                         # newest measured record, else newest of any kind

Records are `MeasuredRecord` (audited here), `ReportedRecord` (published elsewhere, with a citation) and
`SameWeightsRecord` (byte-identical weights to an audited model); see `entries`.
"""

from .checks import IndexValidationError, Problem, check_index, check_text
from .entries import (
    SCHEMA_VERSION,
    MeasuredRecord,
    ModelEntry,
    ModelRef,
    Record,
    ReportedRecord,
    SameWeightsRecord,
    ScreenedRecord,
)
from .export import export
from .store import Index, IndexNotFoundError, append_record, load_index, lookup, resolve_root

__all__ = [
    "SCHEMA_VERSION",
    "Index",
    "IndexNotFoundError",
    "IndexValidationError",
    "MeasuredRecord",
    "ModelEntry",
    "ModelRef",
    "Problem",
    "Record",
    "ReportedRecord",
    "SameWeightsRecord",
    "ScreenedRecord",
    "append_record",
    "check_index",
    "check_text",
    "export",
    "load_index",
    "lookup",
    "resolve_root",
]
