"""Counts for issue 20 (ast only, nothing imported): functions over 60 lines, signatures with a skip_bad_images
parameter, and for each engine/data option the places its default is written (a keyword default in a def, a
dataclass field, a click.option(..., default=...), an Option(...) declaration).

Run: python benchmarks/code_counts.py src/warmstart   (import cycles: tests/test_import_graph.py)
"""
import ast, pathlib, sys
from collections import defaultdict
root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "src/warmstart")
NAMES = ["epochs", "batch_size", "optimizer", "momentum", "weight_decay", "schedule", "warmup_epochs", "grad_clip",
         "early_stopping", "amp", "workers", "val_fraction", "lr_decay", "bn", "augment", "feature_cache", "model", "weights"]
long, skip_sigs, files_skip, places = [], [], set(), defaultdict(set)
for p in sorted(root.rglob("*.py")):
    rel = str(p.relative_to(root.parent))
    tree = ast.parse(p.read_text())
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if n.end_lineno - n.lineno + 1 > 60:
                long.append((n.end_lineno - n.lineno + 1, f"{rel}:{n.lineno} {n.name}"))
            a = n.args
            pos = a.posonlyargs + a.args
            if any(x.arg == "skip_bad_images" for x in pos + a.kwonlyargs):
                skip_sigs.append(f"{rel}:{n.lineno} {n.name}"); files_skip.add(rel)
            for arg, d in list(zip(pos[len(pos) - len(a.defaults):], a.defaults)) + list(zip(a.kwonlyargs, a.kw_defaults)):
                if d is not None and arg.arg in NAMES and isinstance(d, ast.Constant) and d.value is not None:
                    places[arg.arg].add(f"{rel}:{d.lineno}")
        elif isinstance(n, ast.ClassDef):
            for b in n.body:
                if isinstance(b, ast.AnnAssign) and isinstance(b.target, ast.Name) and b.target.id in NAMES and \
                        isinstance(b.value, ast.Constant) and b.value.value is not None:
                    places[b.target.id].add(f"{rel}:{b.lineno}")
        elif isinstance(n, ast.Call):
            f = n.func
            fname = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            first = n.args[0].value if n.args and isinstance(n.args[0], ast.Constant) else None
            if not isinstance(first, str):
                continue
            name = first.split("/")[0].lstrip("-").replace("-", "_")
            kw = {k.arg: k.value for k in n.keywords}
            d = kw.get("default", n.args[2] if fname == "Option" and len(n.args) > 2 else None)
            if name in NAMES and fname in ("option", "Option") and isinstance(d, ast.Constant) and d.value is not None:
                places[name].add(f"{rel}:{n.lineno}")
print(f"functions over 60 lines: {len(long)}")
for l, w in sorted(long, reverse=True):
    print(f"  {l:4d} {w}")
print(f"signatures with a skip_bad_images parameter: {len(skip_sigs)} in {len(files_skip)} files")
for name in NAMES:
    print(f"  default of {name:15s} written {len(places[name])}x: {', '.join(sorted(places[name]))}")
