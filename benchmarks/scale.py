"""Past one machine (issue 9): figures for the cluster backends, one subcommand per part, each in its own module.

    python benchmarks/scale.py ingest ...      Ray on two local nodes vs the process pool   (scale_ingest.py)
    python benchmarks/scale.py store ...       PostgreSQL catalog vs SQLite                 (scale_store.py)
    python benchmarks/scale.py search ...      Milvus (HNSW, IVF_SQ8) vs FAISS              (scale_search.py)
    python benchmarks/scale.py index-size ...  Milvus index bytes per vector                (scale_search.py)
    python benchmarks/scale.py serve ...       faceindex serve on PostgreSQL+Milvus vs SQLite+FAISS (scale_serve.py)

`python benchmarks/scale.py SUBCOMMAND --help` lists each part's options.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

PARTS = {"ingest": "scale_ingest", "store": "scale_store", "search": "scale_search", "index-size": "scale_search",
         "serve": "scale_serve"}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in PARTS:
        print(__doc__.strip(), file=sys.stderr)
        raise SystemExit(2)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    importlib.import_module(PARTS[sys.argv[1]]).main()  # each part parses `SUBCOMMAND [options]` itself


if __name__ == "__main__":
    main()
