"""Compare the result tables of two studies: every CSV and JSON file in <before> against the
same file in <after> (e.g. data/08_reporting of two checkouts, or data/08_reporting and
data/test/08_reporting). Timing columns and keys (seconds, prompts_per_second, torch_threads)
are ignored; columns only the second study has are listed, not compared.

Usage: python scripts/compare_tables.py <before>/08_reporting <after>/08_reporting
"""
import json
import sys
from pathlib import Path

import pandas as pd

TIMING = ("seconds", "prompts_per_second", "torch_threads", "tokens_per_second")
a, b = Path(sys.argv[1]), Path(sys.argv[2])
same = differ = 0
for fa in sorted(a.glob("*.csv")) + sorted(a.glob("*.json")):
    fb = b / fa.name
    if not fb.exists():
        print(f"only in before: {fa.name}"); continue
    if fa.suffix == ".json":
        ja, jb = json.loads(fa.read_text()), json.loads(fb.read_text())
        keys = {k for k in set(ja) | set(jb) if not any(t in k for t in TIMING)}
        bad = sorted(k for k in keys if ja.get(k) != jb.get(k))
        print(f"{fa.name}: {'identical' if not bad else 'DIFFERS in ' + ', '.join(bad[:8])}"); same += not bad; differ += bool(bad); continue
    da, db = pd.read_csv(fa), pd.read_csv(fb)
    if "metric" in da.columns:
        da = da[~da["metric"].astype(str).str.contains("|".join(TIMING))]
        db = db[~db["metric"].astype(str).str.contains("|".join(TIMING))]
    cols = [c for c in da.columns if c in db.columns and not any(t in c for t in TIMING)]
    extra = sorted(set(db.columns) - set(da.columns)); gone = sorted(set(da.columns) - set(db.columns))
    try:
        pd.testing.assert_frame_equal(da[cols].reset_index(drop=True), db[cols].reset_index(drop=True), check_exact=False, rtol=1e-9, atol=1e-12)
        ok = True; msg = "identical"
    except AssertionError as e:
        ok = False; msg = "DIFFERS: " + " ".join(str(e).split())[:300]
    print(f"{fa.name}: {msg}" + (f" (new columns: {extra})" if extra else "") + (f" (dropped: {gone})" if gone else ""))
    same += ok; differ += not ok
print(f"{same} identical, {differ} differ")
sys.exit(1 if differ else 0)
