"""Print the SASS lines with the most stall samples from `ncu --page source --csv` output (stdin),
per kernel instance (throw-away helper for session 15's probe)."""
import csv
import io
import sys

text = sys.stdin.read()
blocks = [b for b in text.split('"Address"') if b.strip()]
for bi, b in enumerate(blocks[1:] if not text.lstrip().startswith('"Address"') else blocks):
    rows = list(csv.reader(io.StringIO('"Address"' + b)))
    h = rows[0]
    try:
        src = h.index("Source")
        allc = next(i for i, c in enumerate(h) if c.startswith("Warp Stall Sampling (All"))
    except (ValueError, StopIteration):
        print("columns:", h[:30])
        continue
    data = []
    for r in rows[1:]:
        if len(r) <= allc:
            continue
        try:
            data.append((float(r[allc].replace(",", "")), r[src]))
        except ValueError:
            pass
    tot = sum(d[0] for d in data) or 1
    print(f"--- kernel instance {bi}: {len(data)} SASS lines, {tot:.0f} samples")
    for n, s_ in sorted(data, reverse=True)[:22]:
        print(f"{100 * n / tot:5.1f}%  {s_[:90]}")
