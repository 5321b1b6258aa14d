# Vendored copy of ../shared/tools/sass_hazard.py (the fp4mm team's SASS checker, written for the
# Gluon notes in shared/notes/gluon-hopper.md); CI has no /work/shared, so the test imports this
# copy. Unchanged apart from this header (the shebang line dropped).
# ruff: noqa
"""Usage: sass_hazard.py FILE.sass ...  (SASS text, e.g. a compiled kernel's asm["sass"] written to a file).
Rough SASS checker: does any instruction overwrite a register that is the A operand of an HGMMA that may still be
in flight (not yet retired by WARPGROUP.DEPBAR.LE gsb0, N)?  Explores the CFG (both branch edges) with state memo."""
import re, sys

SKIP = ("HGMMA", "ST", "BRA", "BAR", "SYNCS", "WARPGROUP", "EXIT", "RET", "UTMA", "ISETP", "FSETP", "HSETP",
        "PLOP3", "UISETP", "RED", "ATOM", "FENCE", "MEMBAR", "NOP", "DEPBAR", "U", "R2UR", "ELECT", "WARPSYNC",
        "BSSY", "BSYNC", "CCTL", "VOTEU", "PREEXIT")

def parse(text):
    ins, labels = [], {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("Function"):
            continue
        m = re.match(r"^(\w+):$", line)
        if m:
            labels[m.group(1)] = len(ins); continue
        if "\t" in line:
            ins.append(line.split("\t", 1)[1].rstrip(";").strip())
    return ins, labels

def dest_regs(inst):
    body = re.sub(r"^@!?U?P\w+\s+", "", inst)
    op, _, rest = body.partition(" ")
    if op.startswith(SKIP):
        return set()
    m = re.match(r"^\s*R(\d+)", rest)
    if not m:
        return set()
    r = int(m.group(1))
    width = 4 if ".128" in op else 2 if re.search(r"\.64\b|\.U64|\.S64|\.F64", op) else 1
    return set(range(r, r + width))

def check(text, name):
    ins, labels = parse(text)
    problems = {}
    seen = set()
    stack = [(0, (), frozenset())]
    while stack:
        pc, groups, cur = stack.pop()
        while pc < len(ins):
            key = (pc, groups, cur)
            if key in seen:
                break
            seen.add(key)
            inst = ins[pc]
            if "HGMMA" in inst:
                a = re.search(r"HGMMA\S*\s+R\d+,\s*R(\d+),", inst)
                if a:
                    cur = cur | frozenset(range(int(a.group(1)), int(a.group(1)) + 4))
                if "gsb0" in inst:
                    groups = groups + (cur, ); cur = frozenset()
            elif "WARPGROUP.DEPBAR.LE" in inst:
                n = int(re.search(r"gsb0,\s*0x([0-9a-f]+)", inst).group(1), 16)
                groups = groups[len(groups) - n:] if n else ()
            else:
                live = frozenset().union(*groups) if groups else frozenset()
                hit = dest_regs(inst) & live
                if hit:
                    problems.setdefault(pc, (inst, sorted(hit)))
            m = re.search(r"\bBRA\s+(\w+)", inst)
            if m and m.group(1) in labels:
                tgt = labels[m.group(1)]
                if inst.startswith("@"):
                    stack.append((tgt, groups, cur))
                else:
                    pc = tgt; continue
            if re.match(r"^(@!?P\w+\s+)?(EXIT|RET)", inst) and not inst.startswith("@"):
                break
            pc += 1
    print(f"== {name}: {len(problems)} instruction(s) overwrite A registers of a possibly in-flight HGMMA")
    for pc, (inst, h) in list(sorted(problems.items()))[:3]:
        print(f"   #{pc}: {inst}  regs {h}")
    return len(problems)

if __name__ == "__main__":
    total = sum(check(open(f).read(), f) for f in sys.argv[1:])
    sys.exit(1 if total else 0)
