# Equal-cost variants of the fast recipe, seeds interleaved, under a time budget (in-process).
import json, sys, time
from pathlib import Path
from cifar_cnn.data import load_cifar10
from cifar_cnn.train import train
OUT, BUDGET = Path(sys.argv[1]), float(sys.argv[2]); T0 = time.time()
data = load_cifar10(verbose=False)
variants = {"base": {}, "lr0.20": {"lr": 0.20}, "lr0.30": {"lr": 0.30}, "ls0.15": {"label_smoothing": 0.15},
            "ls0.25": {"label_smoothing": 0.25}, "batch1500": {"batch_size": 1500}, "translate3": {"translate": 3},
            "epochs9": {"epochs": 9}}
res = {k: [] for k in variants}
for seed in range(6):
    for name, kw in variants.items():
        if time.time() - T0 > BUDGET: break
        t = time.time(); r = train("fast", data=data, seed=seed, progress=False, **kw)
        res[name].append(r.metrics.accuracy)
        print(f"{name} seed {seed}: {r.metrics.accuracy:.4f} ({r.train_seconds:.1f} s train, {time.time()-t:.1f} s)", flush=True)
        (OUT / "sweep_fast.json").write_text(json.dumps(res, indent=1))
for k, v in res.items():
    if v: print(f"{k:10s} n={len(v)} mean={sum(v)/len(v):.4f}")
